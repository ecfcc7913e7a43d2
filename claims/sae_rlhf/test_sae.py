"""Claims of "Sparse Autoencoders for a More Interpretable RLHF" (seed 004): an SAE on one layer's MLP
output (before it is added to the residual stream), SAE(x) = ReLU((x - b_dec) W_enc + b_enc) W_dec + b_dec,
expansion factor 4, decoder rows renormalised after every step, dead latents resampled; spliced into the
model it was trained on; then fine-tuning through a per-latent scale c and bias d alone.

On the review models the SAE trains on reviews from the zoo's generator and is evaluated on reviews of
another seed; the subject's `sae` table fixes the layer and the training recipe.
"""
from claims.sae_rlhf import analysis as A
from claims.sae_rlhf import sae_tuning as T
from claims.sae_rlhf import tables
from fixtures.catalogue import Param, claim
from lib import sae as S
from lib.stats import fraction

SAE_PARAMS = {
    "sae": Param("the SAE: layer (it reads blocks.<layer>.hook_mlp_out), expansion (d_sae / d_model), l1_coeff, "
                 "lr, batch_size, epochs, resample_window (steps between dead-latent checks; none: no resampling), "
                 "normalise_decoder (default true: unit-norm decoder rows after every step), seed (default 0); "
                 "untrained = true: the SAE as initialised, never trained", type=dict),
    "train_text": Param("the reviews the SAE trains on: {reviews, seed} of the zoo's generator "
                        "(not read where sae.untrained)", None, type=dict),
    "heldout_text": Param("the held-out reviews the SAE is judged on: {reviews, seed}", type=dict),
}


@claim(
    "SAE-01",
    rule="Holds when, on held-out text, the loss with the SAE spliced in at its own layer lies below the baseline "
         "loss by at most `max_below_baseline` of the loss zero-ablation costs (`baseline_loss`: a reconstruction "
         "does not beat the model it reconstructs beyond the loss's last digits), that loss is below the loss with "
         "the MLP output zero-ablated (`sae_loss`), and the SAE recovers ≥ `min_loss_recovered` of the loss "
         "zero-ablation costs (`loss_recovered`).",
    statement="An SAE spliced in at its own layer keeps loss near baseline and beats zero-ablation",
    shown="Results, Exploring a Sparse Autoencoder: Pythia 6.9B, layer 1, held-out loss baseline 3.193, "
          "SAE spliced in 3.201, zero-ablated 3.227 (loss recovered 0.76)",
    params={
        **SAE_PARAMS,
        "min_loss_recovered": Param("the SAE recovers at least this share of the loss zero-ablation costs",
                                    type=(int, float)),
        "max_below_baseline": Param("the spliced loss lies below the baseline by at most this share of the loss "
                                    "zero-ablation costs", 0.01),
    },
)
def test_sae_01_spliced_sae_keeps_loss_near_baseline(subject, params, model, record):
    """"When inserted into Pythia 6.9B at layer one, our sparse autoencoder achieves a loss of 3.201
    (zero-ablation degrades loss to 3.227) on the held-out dataset ... Pythia 6.9B's baseline loss is 3.193."
    (seed 004, Results, Exploring a Sparse Autoencoder.) On held-out text: baseline <= loss with the SAE
    spliced in at its own layer (up to `max_below_baseline` of what zero-ablation costs, float noise on a
    near-perfect SAE) < loss with that MLP output zero-ablated, and the SAE recovers at least
    `min_loss_recovered` of the loss that zero-ablation costs, (zero - sae) / (zero - baseline): the source's
    own figures give (3.227 - 3.201) / (3.227 - 3.193) = 0.76. The loss with the MLP output replaced by
    its mean over the held-out text is shown beside it: a zero-ablation can cost little where the output
    is mostly a constant."""
    sae, _ = A.trained_sae(model, params)
    hook = A.hook_name(params["sae"])
    tokens, mask = A.reviews(model, params["heldout_text"])
    losses = A.heldout_losses(model, sae, params, [params["sae"]["layer"]], mean_ablation=True)
    clean, spliced = losses["clean"], losses["spliced"][0]
    zero, mean = losses["zero_ablated"][0], losses["mean_ablated"][0]
    recovered = S.loss_recovered(clean, spliced, zero)
    metrics = S.sae_metrics(sae, S.hook_acts(model, tokens, mask, hook))
    # `published` is a registry meta key (the source's figures), absent where the subject gives none
    tables.heldout_losses(record, params.get("published", {}), clean, spliced, zero, mean, recovered)
    record.measure(hook=hook, d_sae=sae.d_sae, heldout_tokens=int(mask.sum()), **metrics,
                   clean_loss=clean, spliced_loss=spliced, zero_ablation_loss=zero, mean_ablation_loss=mean,
                   extra_loss=spliced - clean, loss_recovered=recovered,
                   loss_recovered_vs_mean_ablation=(mean - spliced) / (mean - clean) if mean != clean else float("nan"))
    # a near-perfect SAE ties the baseline: which side it lands on is float noise (-1.3e-5 nats on one CPU's
    # kernels, +1e-6 on another's), so the order is checked on the scale of what zero-ablation costs
    record.expect("baseline_loss", (clean - spliced) / (zero - clean) if zero != clean else float("nan"), "<=",
                  params["max_below_baseline"])
    record.expect("sae_loss", spliced, "<", zero)
    record.expect("loss_recovered", recovered, ">=", params["min_loss_recovered"])


@claim(
    "SAE-02",
    rule="Holds when, on held-out text, the extra loss over baseline from splicing the SAE in at every other "
         "layer is ≥ `min_ratio` times the extra loss at its own layer, the smallest ratio deciding "
         "(`min_extra_loss_ratio`).",
    statement="Spliced into a layer it was not trained on, loss collapses",
    shown="Results, and the per-layer bar chart of extra loss: Pythia 6.9B's layer-1 SAE inserted at layer 31 "
          "gives loss 12.586 (3.201 at its own layer, baseline 3.193)",
    params={
        **SAE_PARAMS,
        "min_ratio": Param("the extra loss at every other layer is at least this many times that at the SAE's own",
                           type=(int, float)),
    },
)
def test_sae_02_sae_at_another_layer_collapses_loss(subject, params, model, record):
    """"As expected, if the sparse autoencoder is inserted into a layer it was not trained for, performance
    collapses. For example, if inserted at layer 31 of Pythia 6.9B, the loss becomes 12.586." (seed 004,
    Results, and the per-layer bar chart of extra loss.) The extra loss over baseline from splicing the SAE
    in at every other layer is at least `min_ratio` times the extra loss at its own layer (the source's
    layer 31: (12.586 - 3.193) / (3.201 - 3.193) = 1174)."""
    sae, _ = A.trained_sae(model, params)
    own = params["sae"]["layer"]
    layers = list(range(model.cfg.n_layers))
    losses = A.heldout_losses(model, sae, params, layers)
    clean, spliced = losses["clean"], losses["spliced"]
    extra, ratios = A.extra_loss_ratios(clean, spliced, own)
    tables.loss_per_layer(record, clean, spliced, losses["zero_ablated"], own, extra, ratios)
    record.measure(clean_loss=clean, own_layer=own, own_extra_loss=extra[own])
    worst = min(ratios, key=ratios.get)
    record.measure(weakest_other_layer=worst)
    record.expect("min_extra_loss_ratio", ratios[worst], ">=", params["min_ratio"])


@claim(
    "SAE-03",
    rule="Holds when max |decoder row norm − 1| over training stays ≤ `norm_atol` (`max_norm_error`), some "
         "latents were resampled (`latents_resampled` > 0), and on held-out text the never-firing share of "
         "latents is ≤ `max_dead_fraction` (`dead_fraction`) and below that of the same SAE trained without "
         "resampling (`dead_fraction_with_resampling`).",
    statement="Decoder rows keep unit norm; dead latents are resampled",
    shown="Methods, How We Train our Sparse Autoencoder: W_dec's rows renormalised to unit norm after each "
          "optimizer step, dead neurons resampled as Anthropic does (no figure given)",
    params={
        **SAE_PARAMS,
        "norm_atol": Param("after every training step max |decoder row norm - 1| stays within this", type=(int, float)),
        "max_dead_fraction": Param("at most this share of the latents never fires on the held-out text",
                                   type=(int, float)),
    },
)
def test_sae_03_unit_norm_decoder_and_resampled_dead_latents(subject, params, model, record):
    """"We constrain the rows of W_dec to have unit norm by renormalizing after each optimizer step ... We
    follow Anthropic in resampling dead neurons to new values." (seed 004, Methods, How We Train our Sparse
    Autoencoder.) After every training step max |row norm - 1| <= `norm_atol`; latents did die and were
    resampled; on held-out text at most `max_dead_fraction` of the latents never fire, fewer than in the
    same SAE trained without resampling."""
    sae, log = A.trained_sae(model, params)
    without, _ = A.trained_sae(model, params, resample_window=None)
    tokens, mask = A.reviews(model, params["heldout_text"])
    acts = S.hook_acts(model, tokens, mask, A.hook_name(params["sae"]))
    events = [e["step"] for e in log["resamples"]]
    dead, dead_without = S.sae_metrics(sae, acts)["dead_fraction"], S.sae_metrics(without, acts)["dead_fraction"]
    max_norm_error, resampled = max(log["max_norm_error"]), sum(len(e["latents"]) for e in log["resamples"])
    tables.sae_training(record, log, events)
    record.measure(steps=log["steps"], resample_events=len(events), latents_resampled=resampled,
                   max_norm_error=max_norm_error, dead_fraction=dead, dead_fraction_without_resampling=dead_without)
    record.expect("max_norm_error", max_norm_error, "<=", params["norm_atol"])
    record.expect("latents_resampled", resampled, ">", 0)
    record.expect("dead_fraction", dead, "<=", params["max_dead_fraction"])
    record.expect("dead_fraction_with_resampling", dead, "<", dead_without)


@claim(
    "SAE-04",
    rule="Holds when, after tuning only c and d, the Wilson lower bound of the held-out pairs' share "
         "preferring the positive review exceeds the untuned upper bound (`preference_after_ci_low`), sampled "
         "completions' mean VADER reward rises (`vader_reward_after`), only `tuning.c` and `tuning.d` changed "
         "(`changed_parameters`), and the model and SAE weights are unchanged (`frozen_weights_now`).",
    statement="Fine-tuning only a per-latent scale and bias changes behaviour on the task",
    shown="Methods, Fine-Tuning: vectors c and d of dimension d_auto scale and translate the SAE's hidden "
          "layer just before the ReLU, all else frozen (the results were left unwritten: no figure)",
    params={
        **SAE_PARAMS,
        "tuning": Param("the DPO recipe and its training pairs: steps, batch_size, beta, optim ('adam' or 'sgd', "
                        "default 'adam'), pairs and seed of the zoo's preference pairs", type=dict),
        "lr_grid": Param("the learning rates tried; the one doing best on validation_pairs is taken", type=list),
        "validation_pairs": Param("the pairs that choose the learning rate: {pairs, seed}", type=dict),
        "heldout_pairs": Param("the pairs that judge the claim: {pairs, seed}", type=dict),
        "sample_prompts": Param("the prompts whose sampled completions' VADER reward is compared", type=list),
        "samples_per_prompt": Param("completions sampled per prompt, before and after tuning", type=int),
    },
)
def test_sae_04_tuning_only_latent_scale_and_bias(subject, params, model, record):
    """"Instead of adjusting weights everywhere in the network, we constrain fine-tuning to adjust only a
    small set of interpretable parameters within the sparse autoencoder. In particular, we learn two vectors
    of dimension d_auto: a coefficient vector c and a bias vector d. Just prior to applying ReLU, we scale
    the autoencoder hidden layer by c and translate it by d." (seed 004, Methods, Fine-Tuning; the results
    were left unwritten.) Tuned by DPO towards the more positive of two reviews that differ only in their
    sentiment words, with the learning rate of `lr_grid` that does best on `validation_pairs`: on the
    held-out pairs the share preferring the positive one rises (the tuned Wilson interval lies above the
    untuned one), the seed-001 VADER reward of sampled completions rises, and the parameters whose bytes
    changed in tuning, among all the model's and the SAE's, are exactly c and d."""
    sae, _ = A.trained_sae(model, params)
    hook, spec = A.hook_name(params["sae"]), params["tuning"]
    train, validation = A.preference_pairs(model, spec), A.preference_pairs(model, params["validation_pairs"])
    heldout = A.preference_pairs(model, params["heldout_pairs"])
    untuned = S.splice_hooks(hook, sae)
    runs, lr = A.tuned_over_lr_grid(model, sae, hook, spec, params["lr_grid"], train, validation)
    tuning, log, _ = runs[lr]
    tuned = T.tuning_hooks(hook, tuning)

    before, after = fraction(T.preferred(model, heldout, untuned)), fraction(T.preferred(model, heldout, tuned))
    prompts, n = params["sample_prompts"], params["samples_per_prompt"]
    texts_before, texts_after = A.samples(model, prompts, n, untuned), A.samples(model, prompts, n, tuned)
    tokens, mask = A.reviews(model, params["heldout_text"])
    acts = S.hook_acts(model, tokens, mask, hook)

    tables.latent_tuning(record, model, sae, tokens, mask, acts, runs, lr, tuning, log, prompts, n,
                         texts_before, texts_after)
    frozen_now = T.parameter_digest(model, sae)
    record.measure(lr=lr, validation_preference={str(x): run[2].as_json() for x, run in runs.items()},
                   preference_before=before.as_json(), preference_after=after.as_json(),
                   vader_reward_before=A.mean_reward(texts_before), vader_reward_after=A.mean_reward(texts_after),
                   movement_share_of_top_10=A.movement_share(tuning, 10),
                   trainable=log["trainable"], changed_parameters=log["changed"],
                   frozen_digest_at_tuning=log["frozen_digest_before"], frozen_digest_now=frozen_now,
                   heldout_loss_untuned=S.lm_loss(model, tokens, mask, untuned),
                   heldout_loss_tuned=S.lm_loss(model, tokens, mask, tuned))
    record.expect("preference_after_ci_low", after.low, ">", before.high)
    record.expect("vader_reward_after", A.mean_reward(texts_after), ">", A.mean_reward(texts_before))
    record.expect("changed_parameters", log["changed"], "==", ["tuning.c", "tuning.d"])
    record.expect("frozen_weights_now", frozen_now, "==", log["frozen_digest_before"])
