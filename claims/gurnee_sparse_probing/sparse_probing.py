"""k-sparse probing of MLP neurons (Gurnee et al., "Finding Neurons in a Haystack").

A binary feature of the current token is read from the neuron activations at each position. Neurons
are ranked by a cheap filter (the difference of class means on the training split), a logistic
regression is fitted on the top k of them, and its accuracy on held-out data is compared with the
dense probe's (all neurons of the layer). Training and test sets share no token type, so a probe
that merely memorises token identities scores at chance on the test set.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from fixtures.cache import array_sha256, cached_json
from lib.activations import neuron_acts, text_tokens
from lib.errors import SuiteError
from lib.stats import Fraction, fraction


class ProbeDataError(SuiteError):
    """Probe data that cannot give a meaningful probe (a class missing, too few token types)."""


# ---------------------------------------------------------------------------------------------
# Activations


# ---------------------------------------------------------------------------------------------
# The probing data set: one row per token, labelled by a feature of the current token


@dataclass(frozen=True)
class ProbeSplit:
    """Row indices of a balanced train and test set that share no token type."""

    train: Int[np.ndarray, " n_train"]
    test: Int[np.ndarray, " n_test"]
    train_types: tuple[int, ...]
    test_types: tuple[int, ...]


def token_labels(token_ids: Int[Tensor, " n"], positive: Iterable[int], negative: Iterable[int]) -> Int[np.ndarray, " n"]:
    """1 where the token is in `positive`, 0 where in `negative`, -1 elsewhere (not probed)."""
    positive, negative = set(positive), set(negative)
    if positive & negative:
        raise ProbeDataError(f"token ids {sorted(positive & negative)[:5]} are in both classes; the classes must be disjoint")
    ids = token_ids.numpy()
    labels = np.full(ids.shape, -1, dtype=np.int64)
    labels[np.isin(ids, list(positive))] = 1
    labels[np.isin(ids, list(negative))] = 0
    return labels


def word_ids(model, words: Iterable[str]) -> list[int]:
    """The token id of each word, which must be a single known token of the model's tokenizer."""
    tok, out = model.tokenizer, []
    for w in words:
        ids = tok(w, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == tok.unk_token_id:
            raise ProbeDataError(f"{w!r} is not a single token of this model's tokenizer ({ids}); "
                                 f"probe token features only with words that are")
        out.append(ids[0])
    return out


def context_labels(tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"],
                   scores: Float[np.ndarray, " d_vocab"]) -> Int[np.ndarray, " n"]:
    """At each real position whose own token scores 0: 1 if the scores of the tokens so far sum above 0,
    0 if below; -1 elsewhere (a scored token, or a context that sums to 0). Rows follow `tokens[mask]`."""
    tok_scores = torch.as_tensor(scores, dtype=torch.float64)[tokens]
    so_far = (tok_scores * mask).cumsum(1)
    labels = torch.full(tokens.shape, -1, dtype=torch.long)
    neutral = tok_scores == 0
    labels[neutral & (so_far > 0)] = 1
    labels[neutral & (so_far < 0)] = 0
    return labels[mask].numpy()


def special_ids(model) -> set[int]:
    tok = model.tokenizer
    return {i for i in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) if i is not None}


def token_scores(model, score: Callable[[str], float]) -> Float[np.ndarray, " d_vocab"]:
    """`score(word)` for every token of the vocabulary (special tokens score 0)."""
    special = special_ids(model)
    words = [model.tokenizer.decode([i]).strip() for i in range(model.cfg.d_vocab)]
    return np.array([0.0 if i in special else float(score(w)) for i, w in enumerate(words)])


def feature_labels(model, tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"], *,
                   positive: Sequence[str] | None = None, negative: Sequence[str] | str | None = None,
                   context: Callable[[str], float] | None = None) -> Int[np.ndarray, " n"]:
    """Labels of the rows `tokens[mask]`: a token feature (the current token is one of the `positive`
    words, against the `negative` words or, with negative="rest", every other non-special token), or a
    context feature (`context` scores each word; see `context_labels`)."""
    if context is not None:
        return context_labels(tokens, mask, token_scores(model, context))
    if positive is None or negative is None:
        raise ProbeDataError("a feature needs `positive` and `negative` words (or negative = \"rest\"), or a `context` score")
    pos = word_ids(model, positive)
    if negative == "rest":
        neg = sorted(set(range(model.cfg.d_vocab)) - set(pos) - special_ids(model))
    else:
        neg = word_ids(model, negative)
    return token_labels(tokens[mask], pos, neg)


def _balanced(rows: np.ndarray, labels: np.ndarray, rng: np.random.Generator, max_rows: int | None) -> np.ndarray:
    """`rows` with the larger class subsampled to the size of the smaller (and both to max_rows / 2)."""
    pos, neg = rows[labels[rows] == 1], rows[labels[rows] == 0]
    n = min(len(pos), len(neg), max_rows // 2 if max_rows else len(rows))
    if n == 0:
        raise ProbeDataError("a split holds no example of one class; use more text or other token sets")
    keep = np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])
    return np.sort(keep)


def split_by_type(token_ids: Int[Tensor, " n"], labels: Int[np.ndarray, " n"], *, test_fraction: float = 0.5,
                  max_rows: int | None = None, seed: int = 0) -> ProbeSplit:
    """Assign each token type of each class to train or test (about `test_fraction` of the types of each
    class go to test), then balance the classes within each split (at most `max_rows` rows per split)."""
    ids = token_ids.numpy()
    rng = random.Random(seed)
    train_types, test_types = [], []
    for cls in (0, 1):
        types = sorted(set(ids[labels == cls].tolist()))
        if len(types) < 2:
            raise ProbeDataError(f"class {cls} has {len(types)} token type(s) in the data; a split by type needs at least 2 per class")
        rng.shuffle(types)
        n_test = min(len(types) - 1, max(1, round(test_fraction * len(types))))
        test_types += types[:n_test]
        train_types += types[n_test:]
    rows = np.flatnonzero(labels >= 0)
    in_test = np.isin(ids[rows], test_types)
    gen = np.random.default_rng(seed)
    return ProbeSplit(_balanced(rows[~in_test], labels, gen, max_rows), _balanced(rows[in_test], labels, gen, max_rows),
                      tuple(sorted(train_types)), tuple(sorted(test_types)))


# ---------------------------------------------------------------------------------------------
# Probes


def rank_neurons(X: Float[np.ndarray, "n d"], y: Int[np.ndarray, " n"]) -> Int[np.ndarray, " d"]:
    """Neurons ordered by |mean(X | y=1) - mean(X | y=0)|, largest first (Gurnee et al.'s mean-difference filter)."""
    diff = np.abs(X[y == 1].mean(0) - X[y == 0].mean(0))
    return np.argsort(-diff, kind="stable")


def stump_accuracy(X: Float[np.ndarray, "n d"], y: Int[np.ndarray, " n"]) -> Float[np.ndarray, " d"]:
    """Per neuron, the training accuracy of the best threshold on it alone, either sign: the optimal
    1-sparse classifier's accuracy under 0-1 loss."""
    n = len(y)
    order = np.argsort(X, axis=0, kind="stable")
    ys = y[order]  # [n, d], labels in ascending order of each neuron
    pos_below = np.vstack([np.zeros((1, X.shape[1])), np.cumsum(ys, axis=0)])  # positives among the lowest i
    i = np.arange(n + 1)[:, None]
    # predict 1 above the cut: correct = negatives below + positives above
    above = (i - pos_below) + (ys.sum(0) - pos_below)
    # ties: a cut is only allowed between distinct values
    xs = np.take_along_axis(X, order, axis=0)
    valid = np.vstack([np.ones((1, X.shape[1]), bool), xs[1:] != xs[:-1], np.ones((1, X.shape[1]), bool)])
    above = np.where(valid, above, -1)
    best = np.maximum(above.max(0), np.where(valid, n - above, -1).max(0))
    return best / n


def rank_by_stump(X: Float[np.ndarray, "n d"], y: Int[np.ndarray, " n"]) -> Int[np.ndarray, " d"]:
    """Neurons ordered by `stump_accuracy`, best first (ties: larger mean difference first)."""
    diff = np.abs(X[y == 1].mean(0) - X[y == 0].mean(0))
    return np.lexsort((-diff, -stump_accuracy(X, y)))


RANKINGS = {"stump": rank_by_stump, "mean_difference": rank_neurons}


CS = (1e-3, 1e-2, 1e-1, 1.0)


def fit_probe(X: Float[np.ndarray, "n d"], y: Int[np.ndarray, " n"], groups: Int[np.ndarray, " n"] | None = None, *,
              Cs: Sequence[float] = CS, seed: int = 0):
    """Logistic regression on standardised inputs. With `groups` (the token type of each row) the L2
    strength is chosen from `Cs` by 3-fold cross-validation that keeps each type within one fold, so the
    probe is tuned to generalise to unseen types, as the test set demands; without, C = max(Cs)."""
    if groups is None or len(Cs) == 1 or len(np.unique(groups)) < 3:
        lr = LogisticRegression(C=max(Cs), max_iter=2000, random_state=seed)
    else:
        folds = list(GroupKFold(n_splits=3).split(X, y, groups))
        lr = LogisticRegressionCV(Cs=list(Cs), cv=folds, l1_ratios=(0.0,), scoring="accuracy",
                                  use_legacy_attributes=False, max_iter=2000, random_state=seed)
    return make_pipeline(StandardScaler(), lr).fit(X, y)


@dataclass
class ProbeCurve:
    """Test accuracy of the k-sparse probe for each k (the dense probe is k = d) at one layer."""

    layer: int
    ks: list[int]
    neurons: list[list[int]]
    train_accuracy: list[float]
    test_accuracy: list[float]
    test_correct: list[int]
    n_test: int
    dense_test_accuracy: float = float("nan")
    dense_train_accuracy: float = float("nan")

    def accuracy(self, k: int) -> float:
        return self.test_accuracy[self.ks.index(k)]

    def interval(self, k: int) -> Fraction:
        """The k-sparse probe's test accuracy with its Wilson interval."""
        c = self.test_correct[self.ks.index(k)]
        return fraction([True] * c + [False] * (self.n_test - c))

    def share_of_dense(self, k: int) -> float:
        """(accuracy_k - 1/2) / (dense accuracy - 1/2): the share of the dense probe's gain over chance
        (NaN where the dense probe does not beat chance: there is no gain to share)."""
        gain = self.dense_test_accuracy - 0.5
        return (self.accuracy(k) - 0.5) / gain if gain > 0 else float("nan")


def powers_of_two(d: int) -> list[int]:
    ks, k = [], 1
    while k < d:
        ks.append(k)
        k *= 2
    return ks


def probe_curve(X: Float[np.ndarray, "n d"], y: Int[np.ndarray, " n"], split: ProbeSplit,
                token_ids: Int[np.ndarray, " n"] | None = None, *, layer: int = 0, ks: Sequence[int] | None = None,
                ranking: str = "stump", Cs: Sequence[float] = CS, seed: int = 0) -> ProbeCurve:
    """k-sparse probes on the top-k neurons by a filter fitted on the train split (`ranking`: "stump",
    the best single-neuron threshold, which makes k = 1 the optimal 1-sparse probe; or
    "mean_difference"), for each k in `ks` (default 1, 2, 4, ... below d), and the dense probe on all d.
    With `token_ids`, each probe's L2 strength is cross-validated across token types (`fit_probe`)."""
    if ranking not in RANKINGS:
        raise ProbeDataError(f"unknown neuron ranking {ranking!r}; use one of {sorted(RANKINGS)}")
    Xtr, ytr, Xte, yte = X[split.train], y[split.train], X[split.test], y[split.test]
    groups = token_ids[split.train] if token_ids is not None else None
    order = RANKINGS[ranking](Xtr, ytr)
    ks = list(ks) if ks is not None else powers_of_two(X.shape[1])
    curve = ProbeCurve(layer, [], [], [], [], [], len(yte))
    for k in ks:
        top = np.sort(order[:k])
        probe = fit_probe(Xtr[:, top], ytr, groups, Cs=Cs, seed=seed)
        correct = int((probe.predict(Xte[:, top]) == yte).sum())
        curve.ks.append(k)
        curve.neurons.append(top.tolist())
        curve.train_accuracy.append(float(probe.score(Xtr[:, top], ytr)))
        curve.test_accuracy.append(correct / len(yte))
        curve.test_correct.append(correct)
    dense = fit_probe(Xtr, ytr, groups, Cs=Cs, seed=seed)
    curve.dense_train_accuracy = float(dense.score(Xtr, ytr))
    curve.dense_test_accuracy = float(dense.score(Xte, yte))
    return curve


def layer_curves(acts: Float[Tensor, "n layer d_mlp"], labels: Int[np.ndarray, " n"], split: ProbeSplit,
                 layers: Sequence[int], token_ids: Int[Tensor, " n"] | None = None, **kw) -> list[ProbeCurve]:
    """One probe curve per layer; `acts[:, i]` holds layer `layers[i]`."""
    ids = token_ids.numpy() if token_ids is not None else None
    return [probe_curve(acts[:, i].numpy(), labels, split, ids, layer=layer, **kw) for i, layer in enumerate(layers)]


def best_layer(curves: Sequence[ProbeCurve], k: int = 1) -> ProbeCurve:
    """The curve whose k-sparse probe fits the training split best (chosen without the test split)."""
    return max(curves, key=lambda c: (c.train_accuracy[c.ks.index(k)], -c.layer))


# ---------------------------------------------------------------------------------------------
# A feature's verdict and its figure


@dataclass(frozen=True)
class FeatureResult:
    """Per split of the token types: the k = 1 probe at the layer chosen on the training split, beside
    that layer's dense probe."""

    feature: str
    layers: list[int]
    neurons: list[int]
    k1: list[Fraction]
    dense_accuracy: list[float]
    shares: list[float]  # (accuracy_1 - 1/2) / (dense accuracy - 1/2)
    min_dense_accuracy: float

    @property
    def share(self) -> float:
        return float(np.mean(self.shares))

    @property
    def decodable(self) -> bool:
        """The dense probe reads the feature on unseen token types, on average over the splits."""
        return float(np.mean(self.dense_accuracy)) >= self.min_dense_accuracy

    @property
    def same_neuron(self) -> bool:
        """Every split's training data picks the same neuron (layer and index) for the k = 1 probe."""
        return len(set(zip(self.layers, self.neurons))) == 1

    @property
    def significant(self) -> bool:
        """The k = 1 probe beats chance on every split (95% Wilson lower bound above 1/2)."""
        return all(f.low > 0.5 for f in self.k1)

    def rows(self) -> list[list]:
        per_split = [[self.feature, i, f"{layer}.{neuron}", round(f.value, 4), f"{f.low:.3f}-{f.high:.3f}",
                      round(dense, 4), round(share, 3)]
                     for i, (layer, neuron, f, dense, share) in enumerate(
                         zip(self.layers, self.neurons, self.k1, self.dense_accuracy, self.shares))]
        mean = [self.feature, "mean", "", round(float(np.mean([f.value for f in self.k1])), 4), "",
                round(float(np.mean(self.dense_accuracy)), 4), round(self.share, 3)]
        return per_split + [mean]


RESULT_COLUMNS = ["feature", "split", "neuron (layer.index)", "k=1 accuracy", "95% CI", "dense accuracy",
                  "share of dense gain"]


def feature_result(feature: str, splits: Sequence[Sequence[ProbeCurve]], min_dense_accuracy: float) -> FeatureResult:
    """`splits`: per split of the token types, the curve of every layer."""
    best = [best_layer(curves, k=1) for curves in splits]
    return FeatureResult(feature, [b.layer for b in best], [b.neurons[0][0] for b in best],
                         [b.interval(1) for b in best], [b.dense_test_accuracy for b in best],
                         [b.share_of_dense(1) for b in best], min_dense_accuracy)


def named_result(results: Sequence[FeatureResult], name: str) -> FeatureResult:
    """The result of the feature called `name`."""
    for r in results:
        if r.feature == name:
            return r
    raise ProbeDataError(f"no probed feature is called {name!r}; name one of {[r.feature for r in results]}")


def curve_figure(splits: Sequence[Sequence[ProbeCurve]], *, title: str):
    """Held-out accuracy against k, one line per layer (mean over the splits); the dense probe is the
    last point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, curve in enumerate(splits[0]):
        acc = np.mean([[*curves[i].test_accuracy, curves[i].dense_test_accuracy] for curves in splits], axis=0)
        ax.plot(range(len(acc)), acc, marker="o", ms=3, label=f"layer {curve.layer}")
    ticks = [str(k) for k in splits[0][0].ks] + ["all"]
    ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
    ax.axhline(0.5, color="grey", lw=0.6, ls="--")
    ax.set(title=f"{title} (mean of {len(splits)} splits by token type)", xlabel="k (neurons in the probe)",
           ylabel="held-out accuracy", ylim=(0.3, 1.02))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Every feature at every layer, and a cache of the result


def probe_features(model, tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"],
                   labels: dict[str, Int[np.ndarray, " n"]], layers: Sequence[int], *, ks: Sequence[int] | None = None,
                   max_rows: int | None = 4000, split_seeds: Sequence[int] = (0,)) -> dict[str, list[list[ProbeCurve]]]:
    """For each feature (`labels`: name -> labels of the rows `tokens[mask]`, see `feature_labels`), per
    split of the token types (one per seed), the probe curve of every layer."""
    acts = neuron_acts(model, tokens, layers)[mask]
    ids = tokens[mask]
    return {name: [layer_curves(acts, y, split_by_type(ids, y, max_rows=max_rows, seed=seed), layers, ids, ks=ks)
                   for seed in split_seeds]
            for name, y in labels.items()}


def cached_probe_features(model, texts: Sequence[str], features: Sequence[dict], layers: Sequence[int], *,
                          ks: Sequence[int] | None = None, max_rows: int | None = 4000,
                          split_seeds: Sequence[int] = (0,)) -> dict[str, list[list[ProbeCurve]]]:
    """`probe_features` on `texts` for `features` (dicts with `name` and the keywords of
    `feature_labels`), cached under `.cache/sparse_probing/` by the model's weights, the token and label
    arrays themselves (so the text generator, the tokenizer and the word lists are all in the key), the
    arguments and the source of this module and of `lib.activations`."""
    tokens, mask = text_tokens(model, texts)
    labels = {f["name"]: feature_labels(model, tokens, mask, **{k: v for k, v in f.items() if k != "name"})
              for f in features}
    full = {"weights_sha256": model.checkpoint.weights_sha256, "tokens": array_sha256(tokens, mask),
            "labels": {name: array_sha256(y) for name, y in labels.items()}, "layers": list(layers),
            "max_rows": max_rows, "ks": list(ks) if ks is not None else None, "split_seeds": list(split_seeds)}

    def compute():  # a list, so that the features keep their order through the JSON
        result = probe_features(model, tokens, mask, labels, layers, ks=ks, max_rows=max_rows, split_seeds=split_seeds)
        return [[name, [[dataclasses.asdict(c) for c in curves] for curves in splits]] for name, splits in result.items()]

    payload = cached_json("sparse_probing", full, compute, modules=(__name__, "lib.activations"))
    return {name: [[ProbeCurve(**c) for c in curves] for curves in splits] for name, splits in payload}
