"""Claims of "Interpreting Learned Feedback Patterns in Large Language Models" (seed 001, Marks et al.):
probes on sparse-autoencoder codes of a fine-tuned model's MLP outputs recover the fine-tuning feedback.

The pipeline (lib.lfp) follows the paper's section 3: the highest-divergence MLP layers; two tied SAEs per
layer (sizes n = d_model and 2n); contrastive (positive, neutral, negative) triples of review prefixes
with a VADER-lexicon word substituted; probe inputs = concatenated SAE codes at that word; activation
deltas = signed L2 distances to the neutral element. Every probe is scored on lexicon words it never saw
in training (5 folds split by word). The paper labels features with GPT-4; here an offline labeller
stands in for it (lib.lfp.label_features): a feature is feedback-related when the mean VADER valence of
the tokens it fires on most strongly is extreme. Where a subject's L1 coefficient differs from the paper's
1e-3, its table says why, every report states the coefficient used, and LFP-02 and LFP-08 also show the
dictionaries trained with the paper's.
"""

import numpy as np
import pytest

from lib import lfp, plots
from lib import probes as P
from lib.divergence import block_divergence

pytestmark = pytest.mark.seed001

# The paper's numbers, shown beside ours.
TABLE_3 = [["Pythia-70m", "HH", 0.9992], ["Pythia-160m", "HH", 1.0], ["GPT-Neo-125m", "HH", 0.999],
           ["Gemma-2b", "HH", 0.9997], ["Pythia-70m", "toxic", 0.9988], ["Pythia-160m", "toxic", 0.999],
           ["GPT-Neo-125m", "toxic", 0.998], ["Gemma-2b", "toxic", 0.9988]]
TABLE_4 = [["Pythia-70m", 0.042, 0.26], ["Pythia-160m", 0.093, 0.014], ["GPT-Neo-125m", 0.023, 0.48],
           ["Baseline (Xavier)", -0.037, 0.55]]
TABLE_5 = [["GPT-Neo-125m", 0.764, 0.842], ["Pythia-70m", 0.8138, 0.9219], ["Pythia-160m", 0.824, 0.906]]
TABLE_6 = [["Pythia-70m", 2.07, 1.96], ["Pythia-160m", 1.95, 1.69], ["GPT-Neo-125m", 1.43, 1.43]]
TABLE_7 = [["Pythia-70m", 0.19, 0.091], ["Pythia-160m", 0.197, 0.041], ["GPT-Neo-125m", 0.139, 0.042]]
# Tables 2 and 9 (GPT-Neo-125m): token -> (predicted, VADER) as published
TABLE_2_9 = {"award": (1.4, 2.5), "loved": (2.0, 2.9), "great": (1.0, 3.1), "precious": (-0.81, 2.7),
             "beautifully": (0.64, 2.7), "marvelous": (1.28, 2.9), "despised": (-2.2, -1.7), "weak": (-2.2, -1.9),
             "dreadful": (-2.6, -1.9), "cowardly": (-2.53, -1.6), "bad": (-2.29, -2.5), "fun": (1.9, 2.3),
             "miserable": (-3.3, -2.2), "brilliant": (1.3, 2.8), "terrible": (-1.9, -2.1), "funny": (0.7, 1.9),
             "boring": (-2.8, -1.3), "amazing": (1.3, 2.8), "wonderful": (0.9, 2.7), "good": (1.4, 1.9)}


@pytest.fixture
def layers(params, request) -> list[int]:
    """The subject's registered high-divergence layers, or the five highest-divergence MLP layers."""
    if "layers" in params:
        return list(params["layers"])
    div = lfp.mlp_divergence(request.getfixturevalue("base_model"), request.getfixturevalue("tuned_model"))
    return lfp.top_layers(div, params.get("n_studied_layers", 5))


@pytest.fixture
def analysis(params, layers, tuned_model) -> lfp.Analysis:
    return lfp.analysis(tuned_model, lfp.Settings.from_params(params, layers))


def _ci(f) -> str:
    return f"{f.low:.1%}-{f.high:.1%}"


LABELLER = ("offline, in place of the paper's GPT-4: a feature is feedback-related when the mean VADER valence of "
            "its {k} strongest tokens on held-out reviews is >= {v} in absolute value")


def _record_settings(analysis, params, record) -> None:
    """The autoencoders' L1 coefficient on this subject, the paper's, and the registry's reason for any difference."""
    s = analysis.s
    record.measure(l1_coeff=s.l1_coeff, paper_l1_coeff=s.paper_l1_coeff,
                   l1_choice=params.get("l1_reason", "the paper's coefficient"))


@pytest.mark.LFP_01
def test_lfp_01_deeper_layers_diverge_most(params, base_model, tuned_model, record):
    """"These high-divergence layers were largely the deeper layers of the LLMs; see Appendix C."
    (seed 001, section 3.2 and Figure 7.) The top-k blocks by L2 norm of the parameter change must be
    mostly (more than half) in the upper half of the network."""
    n = base_model.cfg.n_layers
    block = block_divergence(base_model, tuned_model, n)["l2"]
    mlp = lfp.mlp_divergence(base_model, tuned_model, n)
    top = lfp.top_layers(block, min(params.get("top_k", 5), n))
    record.figure("Figure 7: parameter divergence per layer", plots.bars(
        {"block": block, "MLP": mlp}, title="L2 norm of tuned - base", ylabel="L2", labels=[str(l) for l in range(n)]))
    record.measure(block_l2=block, mlp_l2=mlp, top_layers=top, top_mlp_layers=lfp.top_layers(mlp, min(5, n)))
    if "by_construction" in params:
        record.measure(by_construction=params["by_construction"])
    record.expect("upper_half_share_of_top_layers", sum(l >= n / 2 for l in top) / len(top), ">", 0.5)


@pytest.mark.LFP_02
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
                for seed in range(params.get("n_shuffles", 3))]
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
                  "<", params.get("max_shuffled_deviation", 0.1))
    record.expect("held_out_word_accuracy", acc.examples.value, ">=", params.get("min_accuracy", 0.998))


def vader_probe(analysis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(words, per-word mean held-out prediction of the linear probe, VADER valence)."""
    d = analysis.data
    words, mean_pred = P.group_means(analysis.predicted_delta, d.word)
    return words, mean_pred, P.group_means(d.valence, d.word)[1]


@pytest.mark.LFP_03
def test_lfp_03_probe_reward_correlates_with_vader(params, analysis, record):
    """"We find a strongly significant correlation (p-value = 0.014) between our probe's predictions and
    the VADER lexicon for Pythia-160m [...] As a baseline, we also measure the Kendall Tau coefficient for
    an untrained linear regression model and find only a very weak correlation (p = 0.55)." (seed 001,
    section 4.1, Tables 2, 4 and 9.) Baseline: 100 Xavier-initialised probes; ours must beat their 95th
    percentile. As in the paper, the probe's target is +delta for positive and -delta for negative words, so
    the sign of the target follows the word's polarity and tau over all words mostly measures that sign; tau
    within one polarity (shown, not asserted) is the finer test."""
    _record_settings(analysis, params, record)
    words, pred, valence = vader_probe(analysis)
    tau, p = P.kendall(pred, valence)
    baseline = [P.kendall(P.group_means(b, analysis.data.word)[1], valence)
                for b in P.xavier_predictions(analysis.data.X, params.get("n_baseline", 100))]
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
    alpha = params.get("alpha", 0.05)
    record.expect("kendall_tau", tau, ">", 0.0)
    record.expect("kendall_p", p, "<", alpha)
    record.expect("tau_minus_xavier_95th_percentile", tau - float(np.percentile(base_taus, 95)), ">", 0.0)


@pytest.mark.LFP_04
def test_lfp_04_probe_predicts_the_sign(params, analysis, record):
    """"Even when our probes are less accurate (Table 4), they frequently identify the correct sign of the
    word from VADER (Table 5)." (seed 001, section 4.2, Table 5: 76.4% to 92.2%.) Per held-out word, with
    Wilson 95% intervals; the threshold is the paper's lowest value."""
    _record_settings(analysis, params, record)
    _, pred, valence = vader_probe(analysis)
    acc = P.sign_accuracy(pred, valence)
    record.table("Table 5: sign accuracy of the VADER probe", ["model", "positive words", "negative words"],
                 [[f"ours ({acc['positive']}; {acc['negative']})", acc["positive"].value, acc["negative"].value],
                  *[[f"paper: {m}", a, b] for m, a, b in TABLE_5]])
    record.measure(positive=acc["positive"].as_json(), negative=acc["negative"].as_json())
    threshold = params.get("min_sign_accuracy", 0.764)
    record.expect("positive_words_correct_sign", acc["positive"].value, ">=", threshold)
    record.expect("negative_words_correct_sign", acc["negative"].value, ">=", threshold)


@pytest.mark.LFP_05
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
    record.expect("pc1_explained_variance", float(ratio[0]), ">=", params.get("min_pc1", 0.95))


def _feature_columns(analysis) -> dict[str, list[int]]:
    """Columns of A_concat of the labelled features, by polarity of their top tokens."""
    width = analysis.dictionaries.small[analysis.s.layers[0]].d_sae
    out = {"all": [], "positive": [], "negative": []}
    for i, l in enumerate(analysis.s.layers):
        lab = analysis.labels[l]
        for f in lab["related"]:
            out["all"].append(i * width + f)
            out["positive" if lab["mean_valence"][f] > 0 else "negative"].append(i * width + f)
    return out


@pytest.mark.LFP_06
def test_lfp_06_feedback_features_fire_on_strong_positive_inputs(params, analysis, record):
    """"We find that a feature identified by GPT-4 as related to LFPs is between two and three times as
    likely to be correlated with implicit positive feedback in a fine-tuned LLM's activations by our
    probes (Table 7). We measure for what percentage of activations with an activation delta of > 3 [...]
    the features identified by GPT-4 are active for." (seed 001, section 4.2.) GPT-4 is replaced by the
    offline valence labeller (stated in the report); the deltas are rescaled so that the largest is 4, the
    top of the lexicon's range, as the paper rescales them to the reward's range."""
    _record_settings(analysis, params, record)
    d, s = analysis.data, analysis.s
    strong = analysis.predicted_delta > params.get("strong_delta", 3.0)
    cols = _feature_columns(analysis)
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
    record.measure(feature_labeller=LABELLER.format(k=s.label_top_k, v=s.min_valence), strong_inputs=int(strong.sum()),
                   labelled_features_frequency=labelled, average_feature_frequency=average, labelled_positive_features_frequency=float(freq[cols["positive"]].mean()) if cols["positive"] else None,
                   labelled_negative_features_frequency=float(freq[cols["negative"]].mean()) if cols["negative"] else None)
    record.expect("n_labelled_features", len(cols["all"]), ">", 0)
    record.expect("frequency_ratio_labelled_to_average", ratio, ">=", params.get("min_ratio", 2.0))


def _change(d: dict) -> str:
    return f"after - before {d['mean']:+.3f}, 95% CI {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}"


@pytest.mark.LFP_07
def test_lfp_07_ablating_feedback_features_keeps_or_lowers_reward(params, analysis, tuned_model, record):
    """"To ensure that the features identified by GPT-4 are related to LFPs, we zero-ablate those
    features and measure the performance of the LLM with the ablated features on the fine-tuning task,
    finding that this ablation causes consistent or worse performance on the fine-tuning task in all
    cases." (seed 001, section 4.2, Table 6.) Completions sampled with the same random numbers with and
    without the labelled features' decoded contributions removed at their layers: the reward after
    ablation must not be significantly higher than before (the lower end of the paired 95% interval of
    after - before must be <= 0). Features labelled offline in place of GPT-4."""
    _record_settings(analysis, params, record)
    record.measure(feature_labeller=LABELLER.format(k=analysis.s.label_top_k, v=analysis.s.min_valence))
    features = {l: analysis.labels[l]["related"] for l in analysis.s.layers}
    n, seed, prompts = params.get("n_completions", 1000), params.get("sample_seed", 0), list(lfp.REVIEW_PROMPTS)
    before = lfp.sample_completions(tuned_model, prompts, n, seed=seed)
    after = lfp.sample_completions(tuned_model, prompts, n, seed=seed, fwd_hooks=lfp.ablation_hooks(analysis.dictionaries.small, features))
    sign = -1.0 if params.get("feedback", "positive") == "negative" else 1.0  # the fine-tuning reward
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
        r = sign * lfp.rewards(lfp.sample_completions(tuned_model, prompts, n, seed=seed, fwd_hooks=lfp.ablation_hooks(analysis.dictionaries.small, feats)))
        dc = lfp.paired_difference(r, r_before)
        rows.append([f"control: {name} ({sum(map(len, feats.values()))}); {_change(dc)}", float(r_before.mean()), float(r.mean())])
        record.measure(**{f"control_{key}": dc})
    record.table(f"Table 6: fine-tuning reward of {n} sampled completions", ["model", "before ablation", "after ablation"],
                 [*rows, *[[f"paper: {m}", a, b] for m, a, b in TABLE_6]])
    record.table("sample completions (before | after ablation)", ["before", "after"], [[a, b] for a, b in zip(before[:4], after[:4])])
    record.measure(reward_before=float(r_before.mean()), reward_after=float(r_after.mean()), after_minus_before=diff)
    record.expect("n_ablated_features", sum(map(len, features.values())), ">", 0)
    record.expect("after_minus_before_ci95_low", diff["ci95"][0], "<=", 0.0)


@pytest.mark.LFP_08
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
    record.expect("mean_overlap", float(np.mean([r["overlap"] for r in m])), ">=", params.get("min_overlap", 0.5))
