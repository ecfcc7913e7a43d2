"""Claims of Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability" (seed
003, arXiv:2301.05217): a one-layer transformer adds modulo p with a few key Fourier frequencies, and its
training splits into three phases: memorisation, circuit formation and cleanup.

Claims over training read a series of checkpoints: the subject's `checkpoint_ref` formatted with each
of its `checkpoint_steps`."""
from claims.nanda_grokking import fourier as FO
from fixtures.catalogue import Param, claim

MODADD_PARAMS = {
    "p": Param("the modulus: the model adds numbers 0..p-1 modulo p", type=int),
    "training_log": Param("the training log beside the checkpoint (or its parent) holding the train/test split",
                          type=str),
    "key_frequencies": Param("the claimed key frequencies of the Fourier algorithm", type=list),
}
@claim(
    "GROK-01",
    rule="Holds when the sorted `key_frequencies` equal the `k` strongest frequencies of the number "
         "embeddings' power spectrum (`key_frequencies_are_the_k_strongest`), they hold ≥ `min_power_share` of "
         "its power (`power_share`), and on the test pairs accuracy is ≤ `max_ablated_acc` with their "
         "directions removed from the logits (`ablated_test_acc`) and ≥ `min_kept_acc` with only them kept "
         "(`kept_test_acc`).",
    statement="Modular addition is computed with a few key Fourier frequencies",
    shown="the embedding's Fourier norms and the ablations in Fourier space of section 5",
    params={
        **MODADD_PARAMS,
        "k": Param("the key frequencies must be exactly the k strongest of the embedding's spectrum", type=int),
        "min_power_share": Param("the key frequencies hold at least this share of the embedding's power", type=float),
        "max_ablated_acc": Param("test accuracy with the key frequencies removed from the logits is at most this",
                                 type=float),
        "min_kept_acc": Param("test accuracy with only the key frequencies kept is at least this", type=float),
    },
)
def test_grok_01_key_fourier_frequencies(subject, params, model, record):
    """"We fully reverse engineer the algorithm learned by these networks, which uses discrete Fourier
    transforms and trigonometric identities to convert addition to rotation about a circle. We confirm
    the algorithm by analyzing the activations and weights and by performing ablations in Fourier
    space." (seed 003, Nanda et al. 2023, arXiv:2301.05217; the embedding's Fourier norms, and the
    ablations of section 5.) The `key_frequencies` are exactly the `k` strongest frequencies of the number
    embeddings' measured power spectrum and hold at least `min_power_share` of its power; removing their
    directions from the logits leaves test accuracy at most `max_ablated_acc`, keeping only them leaves it
    at least `min_kept_acc`. The ablations act on the logits (the model has a final LayerNorm between its
    neurons and the unembedding), where Nanda et al. project the neuron activations."""
    task = FO.modular_task(model, params["p"], params["training_log"])
    freqs = FO.check_frequencies(params["key_frequencies"], task.p)
    power = FO.power_spectrum(FO.number_embeddings(model, task))
    strongest, share = FO.top_frequencies(power, params["k"]), FO.power_share(power, freqs)
    logits = FO.grid_logits(model, task)
    test_loss, test_acc = FO.loss_acc(logits, task, task.test)
    ablated_loss, ablated_acc = FO.loss_acc(FO.excluded_logits(logits, task.p, freqs), task, task.test)
    kept_loss, kept_acc = FO.loss_acc(FO.restricted_logits(logits, task.p, freqs), task, task.test)
    record.figure("embedding power per frequency", FO.spectrum_figure(power, freqs))
    record.measure(frequencies=freqs, top_frequencies=strongest, power_share=share,
                   test_acc=test_acc, test_loss=test_loss, ablated_test_loss=ablated_loss, kept_test_loss=kept_loss,
                   ablated_test_acc=ablated_acc, kept_test_acc=kept_acc)
    record.expect("key_frequencies_are_the_k_strongest", sorted(freqs), "==", strongest)
    record.expect("power_share", share, ">=", params["min_power_share"])
    record.expect("ablated_test_acc", ablated_acc, "<=", params["max_ablated_acc"])
    record.expect("kept_test_acc", kept_acc, ">=", params["min_kept_acc"])


@claim(
    "GROK-02",
    rule="Holds when, over the checkpoints, train accuracy reaches `fit_acc` (`memorisation_found`) with a "
         "later sharpest test-loss fall (`cleanup_after_memorisation`); test minus train loss then is ≥ "
         "`min_memorisation_gap` (`memorisation_gap`); restricted loss falls and excluded-minus-train loss "
         "rises before the fall (`restricted_drop`, `excluded_rise` > 0); the test−restricted gap shrinks to ≤ "
         "`max_cleanup_gap_ratio` of its start (`cleanup_gap_ratio`); final test accuracy ≥ `fit_acc` "
         "(`final_test_acc`).",
    statement="Grokking has three phases: memorisation, circuit formation, cleanup",
    shown="section 5.2 and its figure of train, test, restricted and excluded loss over training",
    params={
        **MODADD_PARAMS,
        "checkpoint_ref": Param("the checkpoint at each step: a reference with a {step} field", type=str),
        "checkpoint_steps": Param("the training steps of the checkpoints read, in order", type=list),
        "fit_acc": Param("train accuracy that ends memorisation, and the final test accuracy required", type=float),
        "min_memorisation_gap": Param("test loss is at least this many nats above train loss when memorisation ends",
                                      type=float),
        "max_cleanup_gap_ratio": Param("over cleanup, test loss closes on restricted loss: gap ratio at most this",
                                       type=float),
    },
)
def test_grok_02_three_phases(subject, params, model_store, record):
    """"Based on this understanding, we define progress measures that allow us to study the dynamics of
    training and split training into three continuous phases: memorization, circuit formation, and
    cleanup." (seed 003, Nanda et al. 2023, section 5.2 and its figure of train, test, restricted and
    excluded loss.) Phases by the rule of `claims.nanda_grokking.fourier.grokking_phases`: memorisation
    ends when train accuracy reaches `fit_acc`, with test loss at least `min_memorisation_gap` nats above
    train loss; then restricted loss falls and excluded loss rises against train loss (circuit formation)
    before the sharpest fall in test loss; over cleanup test loss closes on restricted loss (gap ratio at
    most `max_cleanup_gap_ratio`) and test accuracy ends at least `fit_acc`. Restricted and excluded loss
    are computed on the logits (the model has a final LayerNorm between its neurons and the unembedding),
    where Nanda et al. project the neuron activations."""
    curve = FO.progress_curve(model_store.series(params["checkpoint_ref"]), params["checkpoint_steps"], params["p"],
                              params["key_frequencies"], params["training_log"])
    phases = FO.grokking_phases(curve, params["fit_acc"])
    record.figure("train / test / restricted / excluded loss over training", FO.progress_figure(curve, phases))
    record.table("progress measures per checkpoint",
                 ["step", "train loss", "test loss", "restricted loss", "excluded loss", "test acc", "sum sq. weights"],
                 [[c.step, c.train_loss, c.test_loss, c.restricted_loss, c.excluded_loss, c.test_acc, c.weight_norm]
                  for c in curve])
    record.measure(**phases.as_json())
    record.expect("memorisation_found", phases.memorised is not None, "==", True)
    record.expect("cleanup_after_memorisation", phases.cleanup is not None, "==", True)
    record.expect("memorisation_gap", phases.memorisation_gap, ">=", params["min_memorisation_gap"])
    record.expect("restricted_drop", phases.restricted_drop, ">", 0.0)
    record.expect("excluded_rise", phases.excluded_rise, ">", 0.0)
    record.expect("cleanup_gap_ratio", phases.cleanup_gap_ratio, "<=", params["max_cleanup_gap_ratio"])
    record.expect("final_test_acc", phases.final_test_acc, ">=", params["fit_acc"])
