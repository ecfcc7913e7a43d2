"""Claims of Foote et al. 2023, "Neuron to Graph: Interpreting Language Model Neurons at Scale" (seed 003,
arXiv:2304.12918 and arXiv:2305.19911): graphs built from a neuron's top-activating examples predict its
activations better than baselines. Measured on MLP neurons (`blocks.L.mlp.hook_post`) over held-out text
from the review corpus's generator.
"""
from claims.foote_n2g import n2g as G
from fixtures.catalogue import Param, claim
from fixtures.zoo import corpus
from lib import plots
from lib.stats import fraction


@claim(
    "N2G-01",
    rule="Holds when, on held-out reviews, the graph explains its neuron and beats the token baseline on a share of "
         "at least `min_share` of the neurons (`share_graph_better`): explaining means a firing F1 of at least "
         "`min_f1` (a predictor that misses or misfires on most firings explains nothing, whatever a baseline "
         "does), beating means a higher firing F1 than the per-token mean's.",
    statement="Neuron-to-graph explanations predict activations better than baselines",
    shown="the abstract: the graphs predict neuron activation better than two baseline methods, scored against "
          "the neuron's ground-truth activations",
    params={
        "n_train": Param("how many reviews the graphs and the token baseline are built from", type=int),
        "train_seed": Param("the review generator's seed for that text", type=int),
        "n_test": Param("how many held-out reviews the predictions are scored on", type=int),
        "test_seed": Param("the review generator's seed for the held-out text", type=int),
        "layers": Param("the MLP layers whose neurons are explained", type=list),
        "per_layer": Param("the neurons of each layer with the highest maximum activation explained", type=int),
        "n_examples": Param("top-activating training positions each graph is built from", type=int),
        "keep": Param("share of the activation a pruned, salient or augmented pattern must keep", type=float),
        "min_share": Param("the graph's firing F1 beats the baseline's on at least this share of the neurons",
                           type=float),
        "min_f1": Param("a graph explains its neuron only where its held-out firing F1 is at least this", 0.5),
    },
)
def test_n2g_01_graphs_predict_neurons_better_than_token_identity(subject, params, model, record):
    """"These graphs ... can generate token activations on text for automatic validation by comparison
    with the neuron's ground truth activations, which we use to show that the model is better at
    predicting neuron activation than two baseline methods." (seed 003, Foote et al., abstract.) For the
    `per_layer` neurons with the highest maximum activation in each of `layers`, a graph from the
    `n_examples` top-activating training positions (pruned to `keep` of the activation, salient tokens
    kept, the rest wildcards, important tokens augmented by substitution) predicts the activations on
    held-out reviews; so does the token baseline (the neuron's mean activation per current token on the
    same training text). As in Foote et al.'s evaluation, a token fires at half the neuron's largest
    training activation, and each predictor is scored by the F1 of its predicted firing against the
    true firing. The graph's F1 must beat the baseline's on at least `min_share` of the neurons (0.5:
    better than the baseline on a typical neuron), and a win counts only where the graph's F1 reaches
    `min_f1`: on an untrained model both predictors are poor, and beating a poor baseline is no explanation.
    Pearson correlations are reported beside it."""
    scores = G.cached_top_neuron_scores(
        model, corpus.reviews(params["n_train"], params["train_seed"]), corpus.reviews(params["n_test"], params["test_seed"]),
        params["layers"], params["per_layer"], n_examples=params["n_examples"], keep=params["keep"])
    record.table("held-out firing prediction per neuron (precision/recall/F1)", G.COLUMNS, [s.row() for s in scores])
    record.figure("firing F1 of predicted against true activations", plots.bars(
        {"graph": [s.graph_f1 for s in scores], "token baseline": [s.baseline_f1 for s in scores]},
        labels=[str(s.neuron) for s in scores], title="held-out firing F1 per neuron", ylabel="F1"))
    wins = fraction([s.graph_wins and s.graph_f1 >= params["min_f1"] for s in scores])
    mean = lambda values: sum(values) / len(scores)
    record.measure(graph_better=wins.as_json(),
                   graph_better_whatever_its_f1=fraction(s.graph_wins for s in scores).as_json(),
                   mean_graph_f1=mean(s.graph_f1 for s in scores),
                   mean_baseline_f1=mean(s.baseline_f1 for s in scores),
                   mean_graph_precision=mean(s.graph_firing[0] for s in scores),
                   mean_graph_recall=mean(s.graph_firing[1] for s in scores),
                   mean_baseline_precision=mean(s.baseline_firing[0] for s in scores),
                   mean_baseline_recall=mean(s.baseline_firing[1] for s in scores),
                   mean_graph_without_context_f1=mean(s.token_graph_firing[2] for s in scores),
                   mean_graph_r=mean(s.graph_r for s in scores),
                   mean_baseline_r=mean(s.baseline_r for s in scores))
    record.expect("share_graph_better", wins.value, ">=", params["min_share"])
