"""Linear probes on activations: held-out folds split by group (a lexicon word never seen in training),
a logistic probe for a label's sign, a linear probe for a real-valued target, an untrained
(Xavier-initialised) probe as the baseline, Kendall tau, sign accuracy and PCA."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int
from scipy.stats import kendalltau
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GroupKFold

from lib.errors import SuiteError
from lib.stats import Fraction, fraction


class ProbeError(SuiteError):
    """Probe inputs that cannot give a held-out measurement (too few groups, mismatched lengths)."""


def _check(X: np.ndarray, *columns: np.ndarray) -> None:
    if X.ndim != 2:
        raise ProbeError(f"probe inputs must be shaped [examples, features], got {X.shape}")
    for c in columns:
        if len(c) != len(X):
            raise ProbeError(f"probe inputs have {len(X)} rows but a target or group column has {len(c)}")


def grouped_folds(groups: np.ndarray, k: int = 5) -> list[tuple[Int[np.ndarray, " train"], Int[np.ndarray, " test"]]]:
    """k folds whose test groups never occur in training (GroupKFold: deterministic, balanced sizes)."""
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise ProbeError(f"{k} held-out folds need at least {k} groups, got {n_groups}: add words or lower k")
    return list(GroupKFold(n_splits=k).split(np.zeros(len(groups)), groups=groups))


def out_of_fold(X: Float[np.ndarray, "n f"], y: np.ndarray, groups: np.ndarray, fit, k: int = 5) -> np.ndarray:
    """Each example's prediction by the probe `fit(X_train, y_train) -> predict` that never saw its group."""
    _check(X, y, groups)
    pred = np.zeros(len(X), dtype=float)
    for train, test in grouped_folds(groups, k):
        pred[test] = fit(X[train], y[train])(X[test])
    return pred


def logistic_fit(X: np.ndarray, labels: np.ndarray):
    """A logistic probe; predicts P(label = 1)."""
    if len(np.unique(labels)) < 2:
        raise ProbeError("a logistic probe needs both classes in its training split")
    clf = LogisticRegression(max_iter=2000).fit(X, labels)
    return lambda Z: clf.predict_proba(Z)[:, 1]


def linear_fit(X: np.ndarray, y: np.ndarray):
    """An ordinary least-squares probe."""
    reg = LinearRegression().fit(X, y)
    return reg.predict


@dataclass(frozen=True)
class Accuracy:
    """Held-out accuracy per example and per group (majority of its examples), with Wilson intervals."""

    examples: Fraction
    groups: Fraction

    def as_json(self) -> dict:
        return {"examples": self.examples.as_json(), "groups": self.groups.as_json()}


def held_out_accuracy(X: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 5) -> Accuracy:
    """Logistic probe for binary `labels` (0/1), evaluated only on groups it never saw."""
    p = out_of_fold(X, labels, groups, logistic_fit, k)
    correct = (p >= 0.5) == labels.astype(bool)
    per_group = [correct[groups == g].mean() > 0.5 for g in np.unique(groups)]
    return Accuracy(fraction(correct), fraction(per_group))


def group_means(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique groups, mean of `values` per group)."""
    keys = np.unique(groups)
    return keys, np.array([values[groups == g].mean() for g in keys])


def xavier_predictions(X: Float[np.ndarray, "n f"], n_draws: int, seed: int = 0) -> Float[np.ndarray, "draws n"]:
    """Predictions of untrained linear probes: weights Xavier-uniform (fan_in f, fan_out 1), bias 0."""
    bound = np.sqrt(6.0 / (X.shape[1] + 1))
    W = np.random.default_rng(seed).uniform(-bound, bound, size=(n_draws, X.shape[1]))
    return W @ X.T


def kendall(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """Kendall's tau-b and its two-sided p-value."""
    if len(pred) != len(true) or len(pred) < 3:
        raise ProbeError(f"Kendall tau needs two equally long sequences of at least 3 values, got {len(pred)} and {len(true)}")
    res = kendalltau(pred, true)
    return float(res.statistic), float(res.pvalue)


def sign_accuracy(pred: np.ndarray, true: np.ndarray) -> dict[str, Fraction]:
    """Share of positive (true > 0) and of negative (true < 0) items whose prediction has the same sign."""
    return {"positive": fraction(pred[true > 0] > 0), "negative": fraction(pred[true < 0] < 0)}


def shuffled_group_labels(labels: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """The random-label control: each group's label (its first example's) permuted across groups, so that
    labels stay constant within a group and balanced as before, but carry no information."""
    keys, first = np.unique(groups, return_index=True)
    perm = dict(zip(keys, np.random.default_rng(seed).permutation(labels[first])))
    return np.array([perm[g] for g in groups])


def auc(score: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `score` for binary `labels`, folded so that 0.5 is no separation and 1
    is perfect separation in either direction."""
    from sklearn.metrics import roc_auc_score

    a = float(roc_auc_score(labels, score))
    return max(a, 1.0 - a)


def pca(X: Float[np.ndarray, "n f"], n_components: int = 2) -> tuple[Float[np.ndarray, " components"], Float[np.ndarray, "n components"]]:
    """Explained-variance ratios and the projection of X onto its first principal components."""
    model = PCA(n_components=n_components, svd_solver="full").fit(X)
    return model.explained_variance_ratio_, model.transform(X)
