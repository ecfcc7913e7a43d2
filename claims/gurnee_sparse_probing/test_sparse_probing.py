"""Claims of Gurnee et al. 2023, "Finding Neurons in a Haystack: Case Studies with Sparse Probing" (seed
003, arXiv:2305.01610): k-sparse probes localise features in single neurons. Measured on MLP neurons
(`blocks.L.mlp.hook_post`) over held-out text from the review corpus's generator.
"""
from claims.gurnee_sparse_probing import sparse_probing as S
from fixtures.catalogue import Param, claim
from fixtures.zoo import corpus


def _feature(spec: dict) -> dict:
    """A registry feature (word lists named by their name in the review corpus) as `feature_labels` keywords."""
    words = lambda names: [w for name in names for w in getattr(corpus, name)]
    if "context" in spec:
        return {"name": spec["name"], "context": corpus.valence}
    negative = spec["negative"] if spec["negative"] == "rest" else words(spec["negative"])
    return {"name": spec["name"], "positive": words(spec["positive"]), "negative": negative}


@claim(
    "SPARSE-01",
    rule="Holds when, for the named `feature` on held-out text, the mean dense-probe accuracy is ≥ "
         "`min_dense_accuracy` (`mean_dense_accuracy`), the k = 1 probe's 95% lower bound exceeds 0.5 on every "
         "split (`k1_lowest_ci_bound`), and its mean share of the dense probe's gain over chance is ≥ "
         "`min_share` (`mean_share_of_dense_gain`).",
    statement="k=1 sparse probes localise single neurons for some features",
    shown="the abstract: with k=1, individual neurons highly relevant for a particular feature; the paper plots "
          "probe accuracy against k",
    params={
        "features": Param("the features probed: name, and positive/negative word lists of the review corpus "
                          "(negative may be \"rest\"), or context = \"vader\"", type=list),
        "feature": Param("the feature the verdict is on, named in advance among `features`", type=str),
        "n_reviews": Param("how many held-out reviews the probes read", type=int),
        "text_seed": Param("the review generator's seed for that text", type=int),
        "layers": Param("the MLP layers probed", type=list),
        "ks": Param("the sparsities k of the probes, against the dense probe", type=list),
        "max_rows": Param("at most this many rows per split (train, test) of a feature, classes balanced", type=int),
        "split_seeds": Param("seeds of the splits of the token types into train and test", type=list),
        "min_share": Param("the k = 1 probe keeps at least this share of the dense probe's gain over chance",
                           type=float),
        "min_dense_accuracy": Param("the feature is decodable: mean dense held-out accuracy at least this",
                                    type=float),
    },
)
def test_sparse_01_a_single_neuron_carries_a_feature(subject, params, model, record):
    """"With k=1, we localize individual neurons which are highly relevant for a particular feature."
    (seed 003, Gurnee et al., abstract.) Features (registry `features`): the current word is a sentiment
    adjective (against any other word); a positive rather than a negative adjective; at a word VADER rates
    0, the valences of the words so far sum above rather than below 0. For each, k-sparse logistic
    probes on the top-k neurons of each layer (ranked on the training split by their best single-neuron
    threshold accuracy, so that k = 1 is the optimal 1-sparse probe) against the dense probe on all
    d_mlp neurons, with train and test sharing no token type; the report shows accuracy against k for
    every feature. The verdict is on the one feature the registry names (`feature`): the k = 1 probe is
    taken at the layer where it fits the training split best, and its share of the dense probe's gain
    over chance, (acc_1 - 1/2) / (acc_dense - 1/2) (the paper plots accuracy against k; the share puts a
    number on "highly relevant"), averaged over `split_seeds` (splits of the token types), must reach
    `min_share` (0.9: nearly all of what the layer knows about the feature). The feature must be
    decodable (mean dense held-out accuracy >= `min_dense_accuracy`) and its neuron must beat chance on
    every split (95% Wilson lower bound above 1/2). The feature is named, and the text and split seeds
    are fresh, so that choosing it among several cannot inflate its measured share."""
    features = [_feature(f) for f in params["features"]]
    by_feature = S.cached_probe_features(
        model, corpus.reviews(params["n_reviews"], params["text_seed"]), features, params["layers"],
        ks=params["ks"], max_rows=params["max_rows"], split_seeds=params["split_seeds"])
    results = [S.feature_result(name, splits, params["min_dense_accuracy"]) for name, splits in by_feature.items()]
    claimed = S.named_result(results, params["feature"])
    for name, splits in by_feature.items():
        record.figure(f"held-out accuracy against k: {name}", S.curve_figure(splits, title=name))
    record.table("k = 1 probe at the layer chosen on each training split, against that layer's dense probe",
                 S.RESULT_COLUMNS, [row for r in results for row in r.rows()])
    record.measure(shares={r.feature: round(r.share, 4) for r in results},
                   dense_accuracy={r.feature: round(float(sum(r.dense_accuracy) / len(r.dense_accuracy)), 4)
                                   for r in results},
                   feature=claimed.feature,
                   neurons=[f"{layer}.{n}" for layer, n in zip(claimed.layers, claimed.neurons)],
                   same_neuron_on_every_split=claimed.same_neuron,
                   k1_accuracy=[f.as_json() for f in claimed.k1], shares_per_split=claimed.shares)
    record.expect("mean_dense_accuracy", float(sum(claimed.dense_accuracy) / len(claimed.dense_accuracy)),
                  ">=", params["min_dense_accuracy"])
    record.expect("k1_lowest_ci_bound", min(f.low for f in claimed.k1), ">", 0.5)
    record.expect("mean_share_of_dense_gain", claimed.share, ">=", params["min_share"])
