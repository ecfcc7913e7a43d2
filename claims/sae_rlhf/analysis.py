"""The SAE claims' analysis: the subject's SAE (trained and cached, or as initialised), the review texts it
reads, the splice losses per layer, and the latent tuning with its learning rate chosen on validation pairs.

A subject's `sae` table fixes the layer (the SAE reads `blocks.<layer>.hook_mlp_out`) and the training
recipe; `train_text` and `heldout_text` are `{reviews, seed}` of the zoo's review generator.
"""
from __future__ import annotations

import torch
from transformer_lens.utilities import get_act_name

from claims.sae_rlhf import sae_tuning as T
from fixtures.cache import array_sha256, cached_sae
from fixtures.zoo import corpus
from lib import sae as S
from lib.activations import text_tokens
from lib.sampling import sample_completions
from lib.stats import Fraction, fraction


def hook_name(spec: dict) -> str:
    return get_act_name("mlp_out", spec["layer"])


def reviews(model, spec: dict):
    return text_tokens(model, corpus.reviews(spec["reviews"], spec["seed"]), bos_in_mask=True)


def train_config(model, spec: dict, **overrides) -> S.SAETrainConfig:
    return S.SAETrainConfig(**{
        "d_sae": spec["expansion"] * model.cfg.d_model, "l1_coeff": spec["l1_coeff"], "lr": spec["lr"],
        "batch_size": spec["batch_size"], "epochs": spec["epochs"], "normalise_decoder": spec.get("normalise_decoder", True),
        "resample_window": spec.get("resample_window"), "seed": spec.get("seed", 0), **overrides})


def trained_sae(model, params: dict, **overrides) -> tuple[S.SAE, dict]:
    """The subject's SAE (cached), or, where `sae.untrained` is set, one of the same shape as initialised."""
    spec = params["sae"]
    cfg = train_config(model, spec, **overrides)
    if spec.get("untrained"):
        return S.SAE(model.cfg.d_model, cfg.d_sae, seed=cfg.seed), {}
    if params["train_text"] is None:
        raise S.SAEError("the SAE trains on `train_text` (reviews, seed); give it, or set sae.untrained = true")
    tokens, mask = reviews(model, params["train_text"])
    key = {"model": model.checkpoint.weights_sha256, "hook": hook_name(spec), "text": params["train_text"],
           "tokens": array_sha256(tokens, mask)}
    return cached_sae(key, lambda: S.hook_acts(model, tokens, mask, hook_name(spec)), cfg)


_LOSSES: dict[tuple, dict] = {}


def heldout_losses(model, sae: S.SAE, params: dict, layers: list[int], mean_ablation: bool = False) -> dict:
    """`lib.sae.splice_losses` on the held-out text at the MLP outputs of `layers`, each loss computed once per
    session for this model, SAE and text (SAE-01 and SAE-02 share the clean loss and the SAE's own layer)."""
    tokens, mask = reviews(model, params["heldout_text"])
    sae_hash = array_sha256(*(v for _, v in sorted(sae.state_dict().items())))
    memo = _LOSSES.setdefault((model.checkpoint.weights_sha256, sae_hash, array_sha256(tokens, mask)), {})
    return S.splice_losses(model, sae, tokens, mask, [hook_name({"layer": l}) for l in layers],
                           mean_ablation=mean_ablation, memo=memo)


def extra_loss_ratios(clean: float, spliced: list[float], own: int) -> tuple[list[float], dict[int, float]]:
    """The extra loss over `clean` of splicing the SAE in after each layer's MLP, and, for every layer but
    `own`, its ratio to the extra loss at `own` (inf where that is not positive)."""
    extra = [s - clean for s in spliced]
    layers = range(len(spliced))
    return extra, {l: extra[l] / extra[own] if extra[own] > 0 else float("inf") for l in layers if l != own}


def preference_pairs(model, table: dict) -> T.PairTokens:
    """The zoo's preference pairs `{pairs, seed}`, tokenised for both sides."""
    return T.pair_tokens(model, corpus.preference_pairs(table["pairs"], table["seed"]))


def tuned_over_lr_grid(model, sae: S.SAE, hook: str, spec: dict, lr_grid: list[float], train: T.PairTokens,
                       validation: T.PairTokens) -> tuple[dict[float, tuple[T.LatentTuning, dict, Fraction]], float]:
    """c and d tuned (cached) on `train` at each learning rate of `lr_grid` with the recipe `spec`, each
    with the share of `validation` pairs it prefers the chosen side of; and the learning rate that does best
    there (the first, i.e. smallest, of equals)."""
    key = {"model": model.checkpoint.weights_sha256, "pairs": spec["pairs"], "seed": spec["seed"]}
    runs = {}
    for lr in lr_grid:
        cfg = T.TuningConfig(steps=spec["steps"], batch_size=spec["batch_size"], lr=lr, beta=spec["beta"],
                             optim=spec.get("optim", "adam"))
        tuning, log = T.cached_tuning(key, model, sae, hook, train, cfg)
        runs[lr] = (tuning, log, fraction(T.preferred(model, validation, T.tuning_hooks(hook, tuning))))
    return runs, max(runs, key=lambda lr: runs[lr][2].value)


def samples(model, prompts: list[str], n: int, hooks) -> list[str]:
    """`n` sampled completions of each prompt (prompt i sampled with seed i), prompt by prompt."""
    return [text for i, p in enumerate(prompts) for text in sample_completions(model, [p], n, seed=i, fwd_hooks=hooks)]


def mean_reward(texts: list[str]) -> float:
    """The mean seed-001 VADER reward of `texts`."""
    return sum(map(corpus.vader_reward, texts)) / len(texts)


def movement_share(tuning: T.LatentTuning, k: int = 10) -> float:
    """The share of the total movement |c - 1| + |d| that its `k` largest entries make."""
    moved = torch.cat([tuning.c - 1, tuning.d]).detach().abs()
    return (moved.sort(descending=True).values[:k].sum() / moved.sum()).item()
