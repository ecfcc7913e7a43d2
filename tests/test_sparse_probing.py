"""k-sparse probing: the single-neuron threshold by hand, a planted informative neuron found with k = 1,
the split by token type, context labels, and the result cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from claims.gurnee_sparse_probing import sparse_probing as S
from lib.errors import HookNameError
from lib.loading import load_model


def test_stump_accuracy_by_hand():
    X = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 1.0], [3.0, 3.0, 2.0], [4.0, 4.0, 3.0]])
    # column 0: y = 0 0 1 1, cut between 2 and 3 -> 4/4; column 1 with y reversed the same (other sign)
    assert S.stump_accuracy(X, np.array([0, 0, 1, 1]))[0] == 1.0
    assert S.stump_accuracy(X, np.array([1, 1, 0, 0]))[1] == 1.0
    # y = 0 1 0 1: best cut leaves one error -> 3/4
    assert S.stump_accuracy(X, np.array([0, 1, 0, 1]))[0] == 0.75
    # column 2 has tied values 1, 1: no cut between them. y = 0 1 1 1: cut at 1|2 -> 0 0 1 1 = 3/4
    assert S.stump_accuracy(X, np.array([0, 1, 1, 1]))[2] == 0.75


@settings(max_examples=50, deadline=None)
@given(X=arrays(np.int64, (12, 3), elements=st.integers(-5, 5)).map(lambda a: a.astype(np.float64)),
       y=arrays(np.int64, 12, elements=st.integers(0, 1)), scale=st.floats(0.1, 10), shift=st.floats(-3, 3))
def test_stump_accuracy_bounds_and_monotone_invariance(X, y, scale, shift):
    acc = S.stump_accuracy(X, y)
    majority = max(y.mean(), 1 - y.mean())
    assert np.all(acc >= majority - 1e-12) and np.all(acc <= 1.0)
    np.testing.assert_allclose(S.stump_accuracy(X * scale + shift, y), acc)
    np.testing.assert_allclose(S.stump_accuracy(-X, y), acc)


def _planted(n_types: int = 40, per_type: int = 20, d: int = 16, neuron: int = 7, seed: int = 0):
    """Rows of `d` noise neurons; token types 0..n_types-1, even types are class 1; neuron `neuron` alone
    reads the class."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_types), per_type)
    y = (ids % 2 == 0).astype(np.int64)
    X = rng.normal(size=(len(ids), d))
    X[:, neuron] = 3.0 * y + 0.3 * rng.normal(size=len(ids))
    return X, y, torch.tensor(ids)


def test_a_planted_neuron_is_found_with_k_1():
    X, y, ids = _planted()
    split = S.split_by_type(ids, y, seed=0)
    curve = S.probe_curve(X, y, split, ids.numpy(), layer=3)
    assert curve.ks == [1, 2, 4, 8]
    assert curve.neurons[0] == [7]
    assert curve.accuracy(1) == 1.0 and curve.dense_test_accuracy >= 0.95
    assert curve.share_of_dense(1) >= 0.9
    result = S.feature_result("planted", [[curve]], min_dense_accuracy=0.75)
    assert (result.layers, result.neurons, result.decodable, result.significant) == ([3], [7], True, True)
    assert result.share == curve.share_of_dense(1)
    # the mean-difference filter finds it as well
    assert S.probe_curve(X, y, split, ranking="mean_difference").neurons[0] == [7]


def test_noise_is_not_decodable():
    X, y, ids = _planted()
    X[:, 7] = np.random.default_rng(1).normal(size=len(y))
    curve = S.probe_curve(X, y, S.split_by_type(ids, y, seed=0), ids.numpy())
    result = S.feature_result("noise", [[curve]], min_dense_accuracy=0.75)
    assert not result.decodable and not result.significant
    curve.dense_test_accuracy = 0.5
    assert np.isnan(curve.share_of_dense(1))


def test_split_by_type_shares_no_type_and_balances():
    ids = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 5, 5, 5, 6, 9])
    labels = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, -1])
    split = S.split_by_type(ids, labels, seed=3)
    assert not set(split.train_types) & set(split.test_types)
    assert set(split.train_types) | set(split.test_types) == {0, 1, 2, 3, 4, 5, 6}
    for rows in (split.train, split.test):
        assert set(ids[rows].tolist()) <= set(split.train_types if rows is split.train else split.test_types)
        assert labels[rows].sum() * 2 == len(rows) and len(rows) > 0
    small = S.split_by_type(ids, labels, seed=3, max_rows=2)
    assert len(small.train) == 2 and len(small.test) == 2


def test_split_needs_two_types_per_class():
    with pytest.raises(S.ProbeDataError, match="at least 2"):
        S.split_by_type(torch.tensor([0, 0, 1, 2]), np.array([1, 1, 0, 0]))


def test_token_labels_and_disjoint_classes():
    labels = S.token_labels(torch.tensor([5, 6, 7, 5]), positive=[5], negative=[7])
    assert labels.tolist() == [1, -1, 0, 1]
    with pytest.raises(S.ProbeDataError, match="both classes"):
        S.token_labels(torch.tensor([5]), positive=[5], negative=[5])


def test_context_labels_by_hand():
    # scores: token 2 is +1, token 3 is -2, others 0; row: <bos>=0 2 4 3 4 4 <pad>
    scores = np.array([0.0, 0.0, 1.0, -2.0, 0.0])
    tokens = torch.tensor([[0, 2, 4, 3, 4, 4, 1]])
    mask = torch.tensor([[False, True, True, True, True, True, False]])
    # rows: 2 (scored -> -1), 4 (sum 1 -> 1), 3 (scored -> -1), 4 (sum -1 -> 0), 4 (sum -1 -> 0)
    assert S.context_labels(tokens, mask, scores).tolist() == [-1, 1, -1, 0, 0]


def test_named_result_refuses_an_unknown_feature():
    X, y, ids = _planted()
    result = S.feature_result("planted", [[S.probe_curve(X, y, S.split_by_type(ids, y), ids.numpy(), ks=[1])]], 0.75)
    assert S.named_result([result], "planted") is result
    with pytest.raises(S.ProbeDataError, match="name one of"):
        S.named_result([result], "positive context")


@pytest.fixture(scope="module")
def tiny():
    return load_model("zoo:tiny-gpt2")


def test_neuron_acts_shape_and_text_tokens(tiny):
    tokens, mask = S.text_tokens(tiny, ["This movie was really good .", "the plot"])
    assert tokens.shape == (2, 8) and mask[:, 0].sum() == 0 and mask.sum() == 6 + 1 + 2 + 1
    acts = S.neuron_acts(tiny, tokens, [0, 2])
    assert acts.shape == (2, 8, 2, tiny.cfg.d_mlp)
    _, cache = tiny.run_with_cache(tokens, names_filter="blocks.2.mlp.hook_post")
    torch.testing.assert_close(acts[:, :, 1], cache["blocks.2.mlp.hook_post"].float())
    with pytest.raises(HookNameError, match="layers run from 0"):
        S.neuron_acts(tiny, tokens, [7])


def test_word_ids_refuses_unknown_words(tiny):
    assert len(S.word_ids(tiny, ["good", "bad"])) == 2
    with pytest.raises(S.ProbeDataError, match="not a single token"):
        S.word_ids(tiny, ["marvelous"])


def test_probe_features_end_to_end_and_cached(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("CLAIMS_CACHE_DIR", str(tmp_path))
    texts = ["This movie was really good and the plot was great .", "the acting was bad and awful .",
             "This film was quite great , the plot was good .", "the movie was awful , the acting bad ."] * 3
    features = [{"name": "positive word", "positive": ["good", "great"], "negative": ["bad", "awful"]},
                {"name": "adjective", "positive": ["good", "great", "bad", "awful"], "negative": "rest"}]
    run = lambda texts: S.cached_probe_features(tiny, texts, features, [0, 2], ks=[1, 2], split_seeds=[0, 1])
    first = run(texts)
    assert list(first) == ["positive word", "adjective"] and len(first["adjective"]) == 2
    curve = first["positive word"][0][1]
    assert (curve.layer, curve.ks, len(curve.neurons[1])) == (2, [1, 2], 2)
    assert run(texts) == first
    assert len(list((tmp_path / "sparse_probing").glob("*.json"))) == 1
    run(texts[:-1])  # other text, another entry
    assert len(list((tmp_path / "sparse_probing").glob("*.json"))) == 2
    result = S.feature_result("adjective", first["adjective"], min_dense_accuracy=0.75)
    assert len(result.rows()) == 3 and result.rows()[-1][1] == "mean"
    fig = S.curve_figure(first["adjective"], title="adjective")
    assert len(fig.axes[0].lines) == 2 + 1  # a line per layer and the chance line
