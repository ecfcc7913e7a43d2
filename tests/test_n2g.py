"""Neuron to Graph: the trie by hand, the token baseline as the exact per-token mean, scores, and the
pruning invariant on a tiny model."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from claims.foote_n2g import n2g as G
from lib.loading import load_model

W = G.WILDCARD


def _graph() -> G.NeuronGraph:
    g = G.NeuronGraph()
    g.add([5], 1.0)  # token 5 alone
    g.add([7, 5], 2.0)  # 5 after 7
    g.add([8, W, 5], 3.0)  # 5 two after 8
    g.add([6], 0.5)
    return g


def test_trie_predicts_its_patterns_exactly():
    g = _graph()
    assert g.match([5]) == 1.0
    assert g.match([7, 5]) == 2.0
    assert g.match([8, 9, 5]) == 3.0
    assert g.match([8, 7, 5]) == 3.0  # the deepest pattern wins over [7, 5]
    assert g.match([9, 9, 6]) == 0.5
    assert g.match([9]) is None and g.match([5, 9]) is None
    tokens = torch.tensor([[9, 7, 5, 6, 8, 2, 5]])
    torch.testing.assert_close(g.predict(tokens), torch.tensor([[0.0, 0.0, 2.0, 0.5, 0.0, 0.0, 3.0]]))
    assert g.n_patterns == 4
    assert g.patterns() == [([8, W, 5], 3.0), ([7, 5], 2.0), ([5], 1.0), ([6], 0.5)]


def test_repeated_pattern_takes_the_mean_and_wildcard_cannot_end_a_pattern():
    g = G.NeuronGraph()
    g.add([3, 4], 1.0)
    g.add([3, 4], 2.0)
    assert g.match([3, 4]) == 1.5
    with pytest.raises(G.N2GError, match="activating token"):
        g.add([4, W], 1.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 5), min_size=1, max_size=4), st.floats(0.1, 5)),
                min_size=1, max_size=6, unique_by=lambda pv: tuple(pv[0])))
def test_a_trie_of_distinct_patterns_returns_each_value_on_its_own_pattern(patterns):
    # with distinct exact patterns, a pattern's own text matches itself most deeply (suffixes are shorter)
    g = G.NeuronGraph()
    for pattern, value in patterns:
        g.add(pattern, value)
    for pattern, value in patterns:
        assert g.match(pattern) == pytest.approx(value)


def test_token_baseline_is_the_per_token_mean():
    tokens = torch.tensor([[0, 1, 2, 1, 9], [0, 2, 2, 3, 9]])
    mask = torch.tensor([[False, True, True, True, False], [False, True, True, True, False]])
    acts = torch.tensor([[7.0, 1.0, 2.0, 3.0, 7.0], [7.0, 4.0, 6.0, 0.5, 7.0]])
    means = G.token_means(tokens, mask, acts, d_vocab=5)
    overall = (1 + 2 + 3 + 4 + 6 + 0.5) / 6
    torch.testing.assert_close(means, torch.tensor([overall, 2.0, 4.0, 0.5, overall]))


def test_scores_by_hand():
    assert G.pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])) == pytest.approx(1.0)
    assert G.pearson(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([2.0, 4.0, 6.0])) == 0.0
    # fires at >= 1: predicted 1 1 1 0, true 1 0 1 1 -> tp 2, precision 2/3, recall 2/3
    p, r, f1 = G.firing_scores(torch.tensor([1.0, 2.0, 1.5, 0.0]), torch.tensor([1.0, 0.0, 3.0, 1.0]), 1.0)
    assert (p, r, f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # never predicted to fire: precision and F1 are 0, recall 0
    assert G.firing_scores(torch.zeros(3), torch.tensor([0.0, 2.0, 0.0]), 1.0) == (0.0, 0.0, 0.0)
    assert G.firing_scores(torch.zeros(3), torch.zeros(3), 1.0) == (0.0, 0.0, 0.0)


def test_top_examples_in_order_without_bos():
    tokens = torch.tensor([[0, 4, 5, 6], [0, 7, 8, 1]])
    mask = torch.tensor([[False, True, True, True], [False, True, True, False]])
    acts = torch.tensor([[9.0, 1.0, -1.0, 3.0], [9.0, 2.0, 0.0, 8.0]])  # BOS and padding never count
    ex = G.top_examples(tokens, mask, acts, 5)
    assert [(e.context, e.activation) for e in ex] == [([4, 5, 6], 3.0), ([7], 2.0), ([4], 1.0)]


def test_top_neurons_per_layer():
    acts = torch.zeros(1, 3, 2, 4)
    acts[0, 1, 0, 2] = 5.0
    acts[0, 2, 0, 1] = 4.0
    acts[0, 2, 1, 3] = 1.0
    acts[0, 0, 1, 0] = 9.0  # position 0 (BOS) is masked out
    mask = torch.tensor([[False, True, True]])
    assert G.top_neurons(acts, mask, [4, 5], 1) == [G.Neuron(4, 2), G.Neuron(5, 3)]


@pytest.fixture(scope="module")
def tiny():
    return load_model("zoo:tiny-gpt2")


def test_graph_of_a_tiny_model_neuron(tiny):
    from claims.gurnee_sparse_probing.sparse_probing import neuron_acts, text_tokens

    tokens, mask = text_tokens(tiny, ["This movie was really good and the plot was great .",
                                      "Her name was Alex Hart . Tomorrow at lunch time Alex", "the acting was bad ."])
    neuron = G.Neuron(1, 3)
    acts = neuron_acts(tiny, tokens, [1])[..., 0, neuron.index]
    report = G.build_graph(tiny, neuron, tokens, mask, acts, n_examples=4, keep=0.5)
    for ex in report.examples:
        # the context's last token is the activating one; pruning keeps a suffix at >= half the activation
        assert ex.pruned == ex.context[len(ex.context) - len(ex.pruned):]
        assert ex.pruned_activation >= 0.5 * ex.activation - 1e-6
        assert len(ex.pattern) == len(ex.pruned) and ex.pattern[-1] == ex.pruned[-1]
        # the full context reproduces the activation seen in the data
        (full,) = G.last_token_acts(tiny, [ex.context], neuron, tiny.tokenizer.bos_token_id, tiny.tokenizer.pad_token_id)
        assert full == pytest.approx(ex.activation, abs=1e-5)
        # the graph predicts at least the pruned activation's pattern on the pruned text itself
        assert report.graph.match(ex.pruned) is not None
        assert report.token_graph.match(ex.pruned[-1:]) is not None
    score = G.score_neuron(tiny, neuron, (tokens, mask, acts), (tokens, mask, acts), n_examples=4)
    assert all(-1.0 <= r <= 1.0 for r in (score.graph_r, score.baseline_r))
    assert all(0.0 <= v <= 1.0 for v in (*score.graph_firing, *score.baseline_firing, *score.token_graph_firing))
    # on its own training text the graph recalls the top example, which fires by definition
    assert score.n_fires >= 1 and score.graph_firing[1] > 0
    assert score.graph_wins == (score.graph_f1 > score.baseline_f1)
    assert score.n_patterns >= 1 and len(score.row()) == len(G.COLUMNS)


def test_scores_are_cached_and_keyed_by_the_text(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("CLAIMS_CACHE_DIR", str(tmp_path))
    train = ["This movie was really good and the plot was great .", "the acting was bad ."]
    test = ["the plot was good .", "This film was bad ."]
    kw = dict(layers=[1], per_layer=1, n_examples=2)
    first = G.cached_top_neuron_scores(tiny, train, test, **kw)
    assert G.cached_top_neuron_scores(tiny, train, test, **kw) == first
    assert len(list((tmp_path / "n2g").glob("*.json"))) == 1
    G.cached_top_neuron_scores(tiny, train, test[:1], **kw)
    assert len(list((tmp_path / "n2g").glob("*.json"))) == 2
