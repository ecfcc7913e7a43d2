"""Claims of "Interpreting Learned Feedback Patterns in Large Language Models" (seed 001, Marks et al.):
probes on sparse-autoencoder codes of a fine-tuned model's MLP outputs recover the fine-tuning feedback.

The pipeline (lfp.py) follows the paper's section 3: the highest-divergence MLP layers; two tied SAEs per
layer (sizes n = d_model and 2n); contrastive (positive, neutral, negative) triples of review prefixes
with a VADER-lexicon word substituted; probe inputs = concatenated SAE codes at that word; activation
deltas = signed L2 distances to the neutral element. Every probe is scored on lexicon words it never saw
in training (5 folds split by word). The paper labels features with GPT-4; here an offline labeller
stands in for it (lfp.label_features): a feature is feedback-related when the mean VADER valence of
the tokens it fires on most strongly is extreme. Where a subject's L1 coefficient differs from the paper's
1e-3, its table says why, every report states the coefficient used, and LFP-02 and LFP-08 also show the
dictionaries trained with the paper's.
"""

import numpy as np
import pytest

from claims.marks_lfp import lfp
from claims.marks_lfp.tables import TABLE_2_9, TABLE_3, TABLE_4, TABLE_5, TABLE_6, TABLE_7
from fixtures.catalogue import Param, claim
from lib import plots
from lib import probes as P
from lib.divergence import block_divergence
from lib.sampling import sample_completions

_SETTINGS = lfp.Settings.defaults()
# Read by the `layers` and `analysis` fixtures (lfp.Settings) and by _record_settings: every claim on the
# shared analysis of the tuned model (LFP-02 to LFP-08) takes them.
ANALYSIS_PARAMS = {
    "layers": Param("the MLP layers studied, highest divergence first (default: the `n_studied_layers` "
                    "highest-divergence ones)", None, type=list),
    "n_studied_layers": Param("how many highest-divergence MLP layers are studied where `layers` is unset", 5),
    "n_reviews": Param("reviews of autoencoder training text", _SETTINGS["n_reviews"]),
    "l1_coeff": Param("the autoencoders' L1 coefficient on this subject (the paper's 1e-3 unless `l1_reason` says "
                      "why not)", _SETTINGS["l1_coeff"]),
    "paper_l1_coeff": Param("the paper's L1 coefficient: dictionaries trained with it are reported beside the "
                            "subject's", _SETTINGS["paper_l1_coeff"]),
    "l1_reason": Param("why the subject's L1 coefficient is the one it is, stated in every report",
                       "the paper's coefficient"),
    "lr": Param("the autoencoders' learning rate", _SETTINGS["lr"]),
    "batch_size": Param("the autoencoders' batch size", _SETTINGS["batch_size"]),
    "data_seed": Param("seed of the autoencoders' training reviews and initialisation", _SETTINGS["data_seed"]),
    "n_triples": Param("contrastive (positive, neutral, negative) triples probed", _SETTINGS["n_triples"]),
    "triple_seed": Param("seed of the reviews the triples are cut from", _SETTINGS["triple_seed"]),
    "label_reviews": Param("held-out reviews for feature labels and the autoencoders' reconstruction metrics",
                           _SETTINGS["label_reviews"]),
    "label_seed": Param("seed of those held-out reviews", _SETTINGS["label_seed"]),
    "label_top_k": Param("a feature's strongest activations whose tokens' VADER valence labels it",
                         _SETTINGS["label_top_k"]),
    "min_valence": Param("a feature is feedback-related when |mean valence of its top tokens| reaches this",
                         _SETTINGS["min_valence"]),
    "overlap_cosine": Param("decoder cosine at which a size-n feature counts as found in the size-2n dictionary",
                            _SETTINGS["overlap_cosine"]),
    "folds": Param("cross-validation folds, split by substituted word", _SETTINGS["folds"]),
}

@pytest.fixture
def layers(params, request) -> list[int]:
    """The subject's registered high-divergence layers, or the `n_studied_layers` highest-divergence MLP layers."""
    if params["layers"] is not None:
        return list(params["layers"])
    div = lfp.mlp_divergence(request.getfixturevalue("base_model"), request.getfixturevalue("tuned_model"))
    return lfp.top_layers(div, params["n_studied_layers"])


@pytest.fixture
def analysis(params, layers, tuned_model) -> lfp.Analysis:
    return lfp.analysis(tuned_model, lfp.Settings.from_params(params, layers))


def _ci(f) -> str:
    return f"{f.low:.1%}-{f.high:.1%}"


def _record_settings(analysis, params, record) -> None:
    """The autoencoders' L1 coefficient on this subject, the paper's, and the registry's reason for any difference."""
    s = analysis.s
    record.measure(l1_coeff=s.l1_coeff, paper_l1_coeff=s.paper_l1_coeff, l1_choice=params["l1_reason"])


@claim(
    "LFP-01",
    rule="Holds when more than half (literal 0.5) of the `top_k` blocks with the largest L2 norm of parameter "
         "change (tuned − base) lie in the upper half of the network, layer ≥ n_layers/2 "
         "(`upper_half_share_of_top_layers`).",
    statement="Layers whose parameters diverge most after RLHF are mostly the deeper layers",
    shown="section 3.2 and Figure 7 (Appendix C): the high-divergence layers are largely the deeper layers",
    params={"top_k": Param("the blocks of largest parameter change counted (at most the model's depth)", 5)},
)
def test_lfp_01_deeper_layers_diverge_most(params, base_model, tuned_model, record):
    """"These high-divergence layers were largely the deeper layers of the LLMs; see Appendix C."
    (seed 001, section 3.2 and Figure 7.) The top-k blocks by L2 norm of the parameter change must be
    mostly (more than half) in the upper half of the network."""
    n = base_model.cfg.n_layers
    block = block_divergence(base_model, tuned_model, n)["l2"]
    mlp = lfp.mlp_divergence(base_model, tuned_model, n)
    top = lfp.top_layers(block, min(params["top_k"], n))
    record.figure("Figure 7: parameter divergence per layer", plots.bars(
        {"block": block, "MLP": mlp}, title="L2 norm of tuned - base", ylabel="L2", labels=[str(l) for l in range(n)]))
    record.measure(block_l2=block, mlp_l2=mlp, top_layers=top, top_mlp_layers=lfp.top_layers(mlp, min(5, n)))
    if "by_construction" in params:
        record.measure(by_construction=params["by_construction"])
    record.expect("upper_half_share_of_top_layers", sum(l >= n / 2 for l in top) / len(top), ">", 0.5)


@claim(
    "LFP-02",
    rule="Holds when the logistic probe on concatenated SAE codes predicts the feedback sign with accuracy ≥ "
         "`min_accuracy` on lexicon words it never saw (`held_out_word_accuracy`), and the mean accuracy of "
         "`n_shuffles` shuffled-label controls lies within `max_shuffled_deviation` of 0.5 "
         "(`shuffled_label_accuracy_distance_from_chance` <).",
    statement="Probes on SAE-condensed activations predict the feedback sign (>= 99.8%)",
    shown="section 4.1, Table 3: logistic probe accuracy >= 99.80% on a test set (99.80% to 100% across models and tasks)",
    params={
        **ANALYSIS_PARAMS,
        "n_shuffles": Param("shuffled-label controls (one seed each)", 3),
        "max_shuffled_deviation": Param("the shuffled-label control's accuracy must sit this close to 50%", 0.1),
        "min_accuracy": Param("the held-out-word accuracy must reach this (the paper's lowest)", 0.998),
    },
    no_subject_holds="on review-dpo-pair the probe on the SAE codes reaches 0.918 on held-out words (the paper's 0.998 not "
                     "reached) at l1 1.0, and less at the paper's 1e-3; the raw MLP outputs give the sign as well, before DPO too. "
                     "Tried by construction: review-lm with block 3 alone tuned so that neurons 3.0 and 3.1 fire (activation 8) "
                     "on the corpus's positive and negative adjectives and stay silent elsewhere (balanced held-out accuracy "
                     "0.998 each), layer 3 studied: the probe on the SAE codes reaches 0.974 on held-out words at l1 1.0 "
                     "(0.976 at 0.1), the raw MLP outputs 0.97; with an L1 penalty on every neuron of the block besides (0.01 "
                     "per unit), 0.969 to 0.971, the raw outputs 0.967",
)
def test_lfp_02_logistic_probe_predicts_feedback_sign(params, analysis, base_model, record):
    """"When trained to predict a less granular feedback signal, our probes achieve near-perfect accuracy
    (>= 99.80% on a test dataset)." (seed 001, section 4.1, Table 3.) Held out: lexicon words the probe
    never saw. Controls: the same probe on labels shuffled across words (must sit near chance), and the
    same probe split by example instead of by word, and the probe on the dictionaries trained with the paper's
    L1 coefficient. The shuffled-label control must sit within `max_shuffled_deviation` (10 points) of 50%."""
    d, s = analysis.data, analysis.s
    _record_settings(analysis, params, record)
    acc = P.held_out_accuracy(d.X, d.label, d.word, s.folds)
    by_example = P.held_out_accuracy(d.X, d.label, np.arange(len(d.label)), s.folds)
    shuffled = [P.held_out_accuracy(d.X, P.shuffled_group_labels(d.label, d.word, seed), d.word, s.folds).examples
                for seed in range(params["n_shuffles"])]
    width = analysis.dictionaries.small[s.layers[0]].d_sae
    per_layer = [[f"layer {l}", P.held_out_accuracy(d.X[:, i * width:(i + 1) * width], d.label, d.word, s.folds).examples]
                 for i, l in enumerate(s.layers)]
    raw = P.held_out_accuracy(d.X_raw, d.label, d.word, s.folds).examples
    base_raw = P.held_out_accuracy(lfp.raw_probe_inputs(base_model, s.layers, analysis.triples), d.label, d.word, s.folds).examples
    paper_l1 = P.held_out_accuracy(analysis.paper_data.X, d.label, d.word, s.folds).examples
    rows = [[f"layers {list(s.layers)} (A_concat), l1 {s.l1_coeff:g}", "held-out words", acc.examples.value, _ci(acc.examples)],
            ["same, scored per word", "held-out words", acc.groups.value, _ci(acc.groups)],
            ["same, split by example", "held-out examples", by_example.examples.value, _ci(by_example.examples)],
            *[[name, "held-out words", f.value, _ci(f)] for name, f in per_layer],
            ["raw MLP outputs, same layers (no autoencoder)", "held-out words", raw.value, _ci(raw)],
            ["base model, raw MLP outputs, same layers", "held-out words", base_raw.value, _ci(base_raw)],
            [f"A_concat with the paper's l1 {s.paper_l1_coeff:g}", "held-out words", paper_l1.value, _ci(paper_l1)],
            *[[f"control: labels shuffled across words ({i})", "held-out words", f.value, _ci(f)] for i, f in enumerate(shuffled)]]
    record.table("Table 3 (ours): logistic probe accuracy, feedback sign", ["probe input", "test split", "accuracy", "95% CI"], rows)
    record.table("Table 3 (paper)", ["model", "task", "accuracy"], TABLE_3)
    record.measure(accuracy=acc.as_json(), accuracy_split_by_example=by_example.examples.as_json(),
                   raw_activations_accuracy=raw.as_json(), base_model_raw_activations_accuracy=base_raw.as_json(),
                   paper_l1_accuracy=paper_l1.as_json(), shuffled_label_accuracy=[f.as_json() for f in shuffled],
                   shuffled_label_accuracy_mean=float(np.mean([f.value for f in shuffled])))
    record.expect("shuffled_label_accuracy_distance_from_chance", abs(float(np.mean([f.value for f in shuffled])) - 0.5),
                  "<", params["max_shuffled_deviation"])
    record.expect("held_out_word_accuracy", acc.examples.value, ">=", params["min_accuracy"])


@claim(
    "LFP-03",
    rule="Holds when Kendall's tau between the linear probe's per-word held-out predictions and VADER valence "
         "is above 0 (`kendall_tau`), its p-value is below `alpha` (`kendall_p`), and tau exceeds the 95th "
         "percentile of the taus of `n_baseline` Xavier-initialised probes (`tau_minus_xavier_95th_percentile` "
         "> 0).",
    statement="A linear probe's predicted token reward correlates with the VADER lexicon",
    shown="section 4.1, Tables 2, 4 and 9: Kendall tau of probe vs VADER 0.042 (p 0.26), 0.093 (p 0.014), 0.023 "
          "(p 0.48) for Pythia-70m, Pythia-160m, GPT-Neo-125m; untrained (Xavier) probe -0.037 (p 0.55)",
    params={
        **ANALYSIS_PARAMS,
        "n_baseline": Param("Xavier-initialised baseline probes", 100),
        "alpha": Param("significance level of Kendall's tau", 0.05),
    },
)
def test_lfp_03_probe_reward_correlates_with_vader(params, analysis, record):
    """"We find a strongly significant correlation (p-value = 0.014) between our probe's predictions and
    the VADER lexicon for Pythia-160m [...] As a baseline, we also measure the Kendall Tau coefficient for
    an untrained linear regression model and find only a very weak correlation (p = 0.55)." (seed 001,
    section 4.1, Tables 2, 4 and 9.) Baseline: 100 Xavier-initialised probes; ours must beat their 95th
    percentile. As in the paper, the probe's target is +delta for positive and -delta for negative words, so
    the sign of the target follows the word's polarity and tau over all words mostly measures that sign; tau
    within one polarity (shown, not asserted) is the finer test."""
    _record_settings(analysis, params, record)
    words, pred, valence = lfp.vader_probe(analysis)
    tau, p = P.kendall(pred, valence)
    baseline = [P.kendall(P.group_means(b, analysis.data.word)[1], valence)
                for b in P.xavier_predictions(analysis.data.X, params["n_baseline"])]
    base_taus = np.array([t for t, _ in baseline])
    pos, neg = valence > 0, valence < 0
    within = {"positive": P.kendall(pred[pos], valence[pos]), "negative": P.kendall(pred[neg], valence[neg])}
    sample = np.random.default_rng(0).choice(len(words), size=min(11, len(words)), replace=False)
    record.table("Tables 2/9 (ours): predicted vs VADER valence, sampled words",
                 ["token", "predicted", "VADER"], [[words[i], round(float(pred[i]), 2), valence[i]] for i in sample])
    record.table("Tables 2/9 (ours vs paper, GPT-Neo-125m): words in both", ["token", "predicted", "VADER", "paper predicted"],
                 [[w, round(float(pred[i]), 2), valence[i], TABLE_2_9[w][0]] for i, w in enumerate(words) if w in TABLE_2_9])
    record.table("Table 4: Kendall tau, probe vs VADER", ["model", "Kendall tau", "p-value"],
                 [["ours: linear probe (held-out words)", tau, p], ["ours: Xavier probe, draw 0", *baseline[0]],
                  ["ours: Xavier probes, 95th percentile of tau", float(np.percentile(base_taus, 95)), ""],
                  *[[f"paper: {m}", t, q] for m, t, q in TABLE_4]])
    record.table("Table 10 (ours): tau within one polarity", ["words", "Kendall tau", "p-value"],
                 [[k, *v] for k, v in within.items()])
    record.figure("probe prediction vs VADER valence (per word)", lfp.scatter_figure(
        valence, pred, title="linear probe, held-out words", xlabel="VADER valence", ylabel="predicted"))
    record.measure(n_words=len(words), kendall_tau_all_words=tau, kendall_p_all_words=p, xavier_tau_percentiles={q: float(np.percentile(base_taus, q)) for q in (5, 50, 95)},
                   within_polarity={k: list(v) for k, v in within.items()})
    alpha = params["alpha"]
    record.expect("kendall_tau", tau, ">", 0.0)
    record.expect("kendall_p", p, "<", alpha)
    record.expect("tau_minus_xavier_95th_percentile", tau - float(np.percentile(base_taus, 95)), ">", 0.0)


@claim(
    "LFP-04",
    rule="Holds when the linear probe's per-word held-out prediction has the correct sign for a share ≥ "
         "`min_sign_accuracy` of positive VADER words (`positive_words_correct_sign`) and of negative VADER "
         "words (`negative_words_correct_sign`).",
    statement="The VADER probe predicts the correct sign (76-92%)",
    shown="section 4.2, Table 5: correct sign for 76.4% to 92.2% of words (positive 76.4-82.4%, negative 84.2-92.2%)",
    params={**ANALYSIS_PARAMS,
            "min_sign_accuracy": Param("share of positive and of negative words whose sign the probe gets right "
                                       "(the paper's lowest)", 0.764)},
)
def test_lfp_04_probe_predicts_the_sign(params, analysis, record):
    """"Even when our probes are less accurate (Table 4), they frequently identify the correct sign of the
    word from VADER (Table 5)." (seed 001, section 4.2, Table 5: 76.4% to 92.2%.) Per held-out word, with
    Wilson 95% intervals; the threshold is the paper's lowest value."""
    _record_settings(analysis, params, record)
    _, pred, valence = lfp.vader_probe(analysis)
    acc = P.sign_accuracy(pred, valence)
    record.table("Table 5: sign accuracy of the VADER probe", ["model", "positive words", "negative words"],
                 [[f"ours ({acc['positive']}; {acc['negative']})", acc["positive"].value, acc["negative"].value],
                  *[[f"paper: {m}", a, b] for m, a, b in TABLE_5]])
    record.measure(positive=acc["positive"].as_json(), negative=acc["negative"].as_json())
    threshold = params["min_sign_accuracy"]
    record.expect("positive_words_correct_sign", acc["positive"].value, ">=", threshold)
    record.expect("negative_words_correct_sign", acc["negative"].value, ">=", threshold)


@claim(
    "LFP-05",
    rule="Holds when the first principal component explains a share ≥ `min_pc1` of the variance of the probe "
         "inputs, the concatenated SAE codes (`pc1_explained_variance`).",
    statement="Probe inputs separate along the first principal component",
    shown="Figure 5: the first principal component, along which the classes differ, explains ~97% of the variance",
    params={**ANALYSIS_PARAMS,
            "min_pc1": Param("the first principal component's share of the probe inputs' variance must reach this", 0.95)},
    no_subject_holds="on review-dpo-pair the first principal component explains 0.56 of the probe inputs' variance (0.95 needed), "
                     "0.12 on the untrained control. On the twin whose neurons 3.0 and 3.1 fire on positive and negative "
                     "adjectives by construction (see LFP-02), layer 3 studied, the first component explains 0.68 to 0.70 "
                     "(l1 0.1 to 1.0), the second 0.14 to 0.15, and it separates the sign (AUC 0.98); with the L1 penalty on "
                     "the block's other neurons too, 0.72 to 0.75",
)
def test_lfp_05_probe_inputs_separate_along_pc1(params, analysis, record):
    """"Inputs to the probes trained in Table 3 are cleanly separable into the probe's classifications
    using dimensionality reduction [...] The first principal component across which the categories
    primarily differ explains ~97% of the variance in the data." (seed 001, Figure 5.)"""
    _record_settings(analysis, params, record)
    d = analysis.data
    ratio, proj = P.pca(d.X)
    separation = P.auc(proj[:, 0], d.label)
    record.figure("Figure 5: PCA of the probe inputs", lfp.pca_figure(proj, d.label, ratio))
    record.measure(explained_variance_ratio=ratio, pc1_label_auc=separation)
    record.expect("pc1_explained_variance", float(ratio[0]), ">=", params["min_pc1"])


@claim(
    "LFP-06",
    rule="Holds when at least one feature is labelled feedback-related (`n_labelled_features` > 0) and, on "
         "inputs whose predicted activation delta exceeds `strong_delta`, the labelled features' activation "
         "frequency is ≥ `min_ratio` times the average feature's (`frequency_ratio_labelled_to_average`).",
    statement="Feedback features are 2-3x more often active on strong positive-feedback inputs",
    shown="section 4.2, Table 7: on inputs with activation delta > 3, labelled features active 19%, 19.7%, 13.9% "
          "against 9.1%, 4.1%, 4.2% for the average feature (Pythia-70m, Pythia-160m, GPT-Neo-125m)",
    params={
        **ANALYSIS_PARAMS,
        "strong_delta": Param("predicted activation delta above which an input counts as strong positive feedback", 3.0),
        "min_ratio": Param("labelled features' activation frequency over the average feature's must reach this", 2.0),
    },
)
def test_lfp_06_feedback_features_fire_on_strong_positive_inputs(params, analysis, record):
    """"We find that a feature identified by GPT-4 as related to LFPs is between two and three times as
    likely to be correlated with implicit positive feedback in a fine-tuned LLM's activations by our
    probes (Table 7). We measure for what percentage of activations with an activation delta of > 3 [...]
    the features identified by GPT-4 are active for." (seed 001, section 4.2.) GPT-4 is replaced by the
    offline valence labeller (stated in the report); the deltas are rescaled so that the largest is 4, the
    top of the lexicon's range, as the paper rescales them to the reward's range."""
    _record_settings(analysis, params, record)
    d, s = analysis.data, analysis.s
    strong = analysis.predicted_delta > params["strong_delta"]
    cols = lfp.feature_columns(analysis)
    freq = (d.X[strong] > 0).mean(0) if strong.any() else np.full(d.X.shape[1], np.nan)
    labelled = float(freq[cols["all"]].mean()) if cols["all"] else float("nan")
    average = float(freq.mean())
    ratio = labelled / average if average > 0 else float("nan")
    record.table("Table 7: activation frequency on inputs with predicted delta > 3",
                 ["model", "labelled features", "average feature"],
                 [[f"ours ({len(cols['all'])} labelled: {len(cols['positive'])} positive, {len(cols['negative'])} negative)",
                   labelled, average], *[[f"paper: {m}", a, b] for m, a, b in TABLE_7]])
    record.table("labelled features (offline labeller: mean VADER valence of top-activating tokens)",
                 ["layer", "feature", "mean valence", "top tokens"],
                 [[l, f, round(float(analysis.labels[l]["mean_valence"][f]), 2), " ".join(analysis.labels[l]["top_words"][f])]
                  for l in analysis.s.layers for f in analysis.labels[l]["related"]])
    record.measure(feature_labeller=lfp.labeller(s), strong_inputs=int(strong.sum()),
                   labelled_features_frequency=labelled, average_feature_frequency=average, labelled_positive_features_frequency=float(freq[cols["positive"]].mean()) if cols["positive"] else None,
                   labelled_negative_features_frequency=float(freq[cols["negative"]].mean()) if cols["negative"] else None)
    record.expect("n_labelled_features", len(cols["all"]), ">", 0)
    record.expect("frequency_ratio_labelled_to_average", ratio, ">=", params["min_ratio"])


def _change(d: dict) -> str:
    return f"after - before {d['mean']:+.3f}, 95% CI {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}"


@claim(
    "LFP-07",
    rule="Holds when at least one feature is ablated (`n_ablated_features` > 0) and, over `n_completions` "
         "paired sampled completions, the lower end of the 95% interval of the fine-tuning reward after minus "
         "before zero-ablating the labelled features is ≤ 0 (`after_minus_before_ci95_low`).",
    statement="Zero-ablating feedback features keeps or lowers the fine-tuning reward",
    shown="section 4.2, Table 6: reward before / after ablation 2.07 / 1.96 (Pythia-70m), 1.95 / 1.69 (Pythia-160m), "
          "1.43 / 1.43 (GPT-Neo-125m)",
    params={
        **ANALYSIS_PARAMS,
        "n_completions": Param("completions sampled with and without the ablation", 1000),
        "sample_seed": Param("seed of the sampling noise (shared by the paired runs) and of the random-feature control", 0),
        "feedback": Param("the fine-tuning feedback, 'positive' or 'negative': the reward is the VADER reward, negated "
                          "for 'negative'", "positive"),
    },
    no_subject_holds="on review-dpo-pair zero-ablating the 15 labelled features raises the reward of the paired completions (95% "
                     "interval of the change starts at +1.20), as ablating the positive-leaning ones alone does. Tried: review-lm "
                     "tuned by review-lm-dpo's DPO recipe with block 4 alone trainable, so that the feedback can only live in "
                     "it (mean VADER reward of samples 1.20, review-lm's 0.25), layer 4 studied: at l1 1.0, 2.0 (the one the "
                     "FVU rule picks) and 3.0 no matched feature's top tokens average a valence of 1, so none is labelled "
                     "and nothing can be ablated",
)
def test_lfp_07_ablating_feedback_features_keeps_or_lowers_reward(params, analysis, tuned_model, record):
    """"To ensure that the features identified by GPT-4 are related to LFPs, we zero-ablate those
    features and measure the performance of the LLM with the ablated features on the fine-tuning task,
    finding that this ablation causes consistent or worse performance on the fine-tuning task in all
    cases." (seed 001, section 4.2, Table 6.) Completions sampled with the same random numbers with and
    without the labelled features' decoded contributions removed at their layers: the reward after
    ablation must not be significantly higher than before (the lower end of the paired 95% interval of
    after - before must be <= 0). Features labelled offline in place of GPT-4."""
    _record_settings(analysis, params, record)
    record.measure(feature_labeller=lfp.labeller(analysis.s))
    features = {l: analysis.labels[l]["related"] for l in analysis.s.layers}
    n, seed, prompts = params["n_completions"], params["sample_seed"], list(lfp.REVIEW_PROMPTS)
    before = sample_completions(tuned_model, prompts, n, seed=seed)
    after = sample_completions(tuned_model, prompts, n, seed=seed, fwd_hooks=lfp.ablation_hooks(analysis.dictionaries.small, features))
    sign = -1.0 if params["feedback"] == "negative" else 1.0  # the fine-tuning reward
    r_before, r_after = sign * lfp.rewards(before), sign * lfp.rewards(after)
    diff = lfp.paired_difference(r_after, r_before)
    # Controls, shown but not asserted: only the features whose top tokens lean the feedback's way; as many
    # random unlabelled features.
    sign_of = lambda l, f: float(analysis.labels[l]["mean_valence"][f]) * sign > 0
    controls = {"feedback_polarity_only": ("labelled, feedback polarity only",
                                           {l: [f for f in fs if sign_of(l, f)] for l, fs in features.items()}),
                "random_unlabelled": ("random unlabelled features, as many",
                                      lfp.random_features(analysis.dictionaries.small, features, seed))}
    rows = [[f"ours: labelled features ({sum(map(len, features.values()))}); {_change(diff)}",
             float(r_before.mean()), float(r_after.mean())]]
    for key, (name, feats) in controls.items():
        r = sign * lfp.rewards(sample_completions(tuned_model, prompts, n, seed=seed, fwd_hooks=lfp.ablation_hooks(analysis.dictionaries.small, feats)))
        dc = lfp.paired_difference(r, r_before)
        rows.append([f"control: {name} ({sum(map(len, feats.values()))}); {_change(dc)}", float(r_before.mean()), float(r.mean())])
        record.measure(**{f"control_{key}": dc})
    record.table(f"Table 6: fine-tuning reward of {n} sampled completions", ["model", "before ablation", "after ablation"],
                 [*rows, *[[f"paper: {m}", a, b] for m, a, b in TABLE_6]])
    record.table("sample completions (before | after ablation)", ["before", "after"], [[a, b] for a, b in zip(before[:4], after[:4])])
    record.measure(reward_before=float(r_before.mean()), reward_after=float(r_after.mean()), after_minus_before=diff)
    record.expect("n_ablated_features", sum(map(len, features.values())), ">", 0)
    record.expect("after_minus_before_ci95_low", diff["ci95"][0], "<=", 0.0)


@claim(
    "LFP-08",
    rule="Holds when the share of the size-n dictionary's features with a decoder match of cosine ≥ "
         "`overlap_cosine` in the size-2n dictionary, averaged over the studied layers, is ≥ `min_overlap` "
         "(`mean_overlap`).",
    statement="Two SAEs of sizes n and 2n on the same activations learn overlapping features",
    shown="sections 2 and 3.4, Figure 3: the overlap of features between two dictionaries of hidden sizes n and 2n "
          "(after Sharkey et al.)",
    params={**ANALYSIS_PARAMS,
            "min_overlap": Param("mean share of the size-n features found in the size-2n dictionary must reach this", 0.5)},
    no_subject_holds="on review-dpo-pair 0.40 of the size-n features have a decoder row within cosine 0.9 in the size-2n "
                     "dictionary (0.5 needed) at l1 1.0, fewer at the paper's 1e-3. Tried by construction: review-lm with block 3 "
                     "alone tuned with an L1 penalty on its MLP neurons' activations (0.001 and 0.003 per unit: 1.5 and 0.6 "
                     "neurons above 0.1 per token, 78 and 54 ever), layer 3 studied: at the l1 whose FVU falls in the paper's "
                     "range (0.03) 0.17 and 0.20 of the size-n features are matched, the codes staying dense (L0 10 to 16); at "
                     "0.01 per unit the MLP all but switches off (12 neurons ever active). On the block-4 DPO twin of LFP-07, "
                     "layer 4, 0.58 are matched at the l1 the FVU rule picks (2.0): a majority, but not by construction, and "
                     "four features above the threshold of an autoencoder trained on each machine's kernels",
)
def test_lfp_08_two_dictionaries_share_features(params, analysis, record):
    """"Sharkey et al. train two sparse autoencoders with different hidden sizes, and find similar
    features in both. [...] The overlap of features is computed between the two dictionaries." (seed 001,
    sections 2 and 3.4, Figure 3.) Share of the size-n dictionary's features with a decoder match of
    cosine >= 0.9 in the size-2n one, averaged over layers; the claim needs a majority. The table shows the
    dictionaries with the subject's L1 coefficient (asserted) and with the paper's 1e-3 (shown)."""
    _record_settings(analysis, params, record)
    m, paper = analysis.dictionaries.metrics, analysis.paper_dictionaries.metrics
    both = m if paper is m else [*m, *paper]
    record.table("sparse autoencoders (tied, ReLU; reconstruction on held-out reviews; paper's Table 11 FVU 0.03-0.06)",
                 ["l1", "layer", "overlap (cos >= 0.9)", "MSE n", "FVU n", "L0 n", "dead n", "MSE 2n", "FVU 2n", "L0 2n", "dead 2n"],
                 [[r["l1_coeff"], r["layer"], r["overlap"], r["mse_n"], r["fvu_n"], r["l0_n"], r["dead_fraction_n"],
                   r["mse_2n"], r["fvu_2n"], r["l0_2n"], r["dead_fraction_2n"]] for r in both])
    record.figure("decoder overlap per layer", plots.bars({str(r["layer"]): r["overlap"] for r in m},
                                                           title="share of n-features found in the 2n dictionary", ylabel="share"))
    record.measure(settings={"lr": analysis.s.lr, "batch_size": analysis.s.batch_size, "n_reviews": analysis.s.n_reviews},
                   mean_overlap_paper_l1=float(np.mean([r["overlap"] for r in paper])),
                   mean_fvu_n={"subject_l1": float(np.mean([r["fvu_n"] for r in m])),
                               "paper_l1": float(np.mean([r["fvu_n"] for r in paper]))})
    record.expect("mean_overlap", float(np.mean([r["overlap"] for r in m])), ">=", params["min_overlap"])
