"""The tables and figures the SAE claims add to their records: each beside the source's own figures where
it gives them (the loss table of "Exploring a Sparse Autoencoder", the per-layer bar chart of extra loss),
and what the tuning of c and d moved."""
from __future__ import annotations

from claims.sae_rlhf import sae_plots
from claims.sae_rlhf import sae_tuning as T
from lib import sae as S


def heldout_losses(record, published: dict, clean: float, spliced: float, zero: float, mean: float,
                   recovered: float) -> None:
    """SAE-01: the held-out loss baseline, with the SAE, with the MLP output zero- and mean-ablated, and the
    loss recovered, beside the source's (Pythia 6.9B, layer 1) where the subject gives them in `published`."""
    published_recovered = (S.loss_recovered(published["baseline_loss"], published["sae_loss"],
                                            published["zero_ablation_loss"]) if published else None)
    record.table("language-model loss on held-out text", ["", "source (Pythia 6.9B, layer 1)", "here"], [
        ["baseline", published.get("baseline_loss"), clean],
        ["SAE spliced in", published.get("sae_loss"), spliced],
        ["MLP output zero-ablated", published.get("zero_ablation_loss"), zero],
        ["MLP output mean-ablated", None, mean],
        ["loss recovered (vs zero-ablation)", published_recovered, recovered]])


def loss_per_layer(record, clean: float, spliced: list[float], zero_ablated: list[float], own: int,
                   extra: list[float], ratios: dict[int, float]) -> None:
    """SAE-02: the source's bar chart (clean loss, and the extra loss of splicing the SAE in after each
    layer's MLP), and the losses per layer."""
    record.figure("LM loss with the SAE spliced in after each layer's MLP",
                  sae_plots.splice_loss_bars(clean, spliced, own, title=f"SAE trained on layer {own}"))
    record.table("loss per layer", ["layer", "spliced loss", "extra loss", "extra / own extra", "zero-ablated loss"],
                 [[l, spliced[l], extra[l], ratios.get(l, 1.0), zero_ablated[l]] for l in range(len(spliced))])


def sae_training(record, log: dict, events: list[int]) -> None:
    """SAE-03: the training curves, with the resampling steps marked."""
    record.figure("SAE training (red lines: resampling)", sae_plots.training_curves(
        log, ["loss", "mse", "l0", "dead_fraction", "max_norm_error"], title="SAE training", events=events))


def latent_tuning(record, model, sae: S.SAE, tokens, mask, acts, runs: dict, lr: float, tuning: T.LatentTuning,
                  log: dict, prompts: list[str], n: int, texts_before: list[str], texts_after: list[str]) -> None:
    """SAE-04: the validation preference per learning rate and the one chosen, the DPO curves, the latents
    whose activations (and whose c, whose d) the tuning moved most with the held-out contexts they fire
    hardest on, and the first three sampled completions of each prompt before and after."""
    record.table("learning rate chosen on the validation pairs",
                 ["lr", "validation pairs preferring the positive review", "95% CI", "chosen"],
                 [[x, run[2].value, f"{run[2].low:.3f}-{run[2].high:.3f}", x == lr] for x, run in runs.items()])
    record.figure("DPO through c and d", sae_plots.training_curves(log, ["loss", "accuracy"], title="latent tuning"))
    top_tokens = lambda i: " | ".join(T.top_activating_tokens(model, sae, tokens, mask, acts, i))
    record.table("latents whose activations the tuning changed most",
                 ["latent", "c", "d", "mean activation before", "after", "top-activating tokens (untuned)"],
                 [[m["latent"], m["c"], m["d"], m["mean_before"], m["mean_after"], top_tokens(m["latent"])]
                  for m in T.moved_latents(tuning, acts)])
    for name, values in (("c", tuning.c - 1), ("d", tuning.d)):
        top = values.abs().argsort(descending=True)[:5].tolist()
        record.table(f"latents whose {name} moved most", ["latent", "c", "d", "top-activating tokens"],
                     [[i, tuning.c[i].item(), tuning.d[i].item(), top_tokens(i)] for i in top])
    record.table("sampled completions", ["prompt", "untuned", "tuned"],
                 [[prompts[i // n], texts_before[i], texts_after[i]] for i in range(len(texts_before)) if i % n < 3])
