"""The Learned-Feedback-Pattern pipeline: divergence by MLP, the contrastive triples, activation deltas
by hand, and feature ablation that leaves a model unchanged when nothing is ablated."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens.utilities import get_act_name

from claims.marks_lfp import lfp
from fixtures.zoo import corpus
from lib.loading import load_model
from lib.sae import SAE


@pytest.fixture(scope="module")
def model():
    return load_model("zoo:tiny-gpt2")


def test_triples_substitute_a_lexicon_word_with_three_others():
    triples = lfp.contrastive_triples(50, seed=0)
    positive, neutral, negative = lfp.sentiment_words()
    assert len(triples) == 50
    for t in triples:
        assert t.positive in positive and t.negative in negative and t.neutral in neutral
        assert t.original in (*positive, *negative)
        assert t.original not in (t.positive, t.negative, t.neutral)
        assert t.prefix and corpus.valence(t.neutral) == 0
    assert triples == lfp.contrastive_triples(50, seed=0)


def test_mlp_divergence_counts_only_mlp_parameters(model):
    tuned = load_model("zoo:tiny-gpt2")
    hf = tuned.original_model
    with torch.no_grad():
        hf.transformer.h[1].mlp.c_fc.weight.view(-1)[0] += 3.0
        hf.transformer.h[1].mlp.c_proj.bias[0] += 4.0
        hf.transformer.h[0].attn.c_attn.weight.view(-1)[0] += 100.0  # not an MLP parameter
    div = lfp.mlp_divergence(model, tuned)
    assert div.tolist() == pytest.approx([0.0, 5.0, 0.0])
    assert lfp.top_layers(div, 1) == [1]


def identity_sae() -> SAE:
    """A tied 2-latent SAE whose codes are ReLU(x)."""
    sae = SAE(2, 2, tied=True)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_deltas_by_hand():
    # one layer, identity-like SAE: codes are ReLU(x); positive (3, 4) vs neutral (0, 0) -> 5; negative (1, 0) -> -1
    sae = identity_sae()
    acts = {role: {get_act_name("mlp_out", 0): torch.tensor([v])} for role, v in
            (("positive", [3.0, 4.0]), ("neutral", [0.0, 0.0]), ("negative", [1.0, 0.0]))}
    codes = {role: lfp.concat_codes({0: sae}, a, [0]) for role, a in acts.items()}
    assert (codes["positive"] - codes["neutral"]).norm().item() == pytest.approx(5.0)
    assert (codes["negative"] - codes["neutral"]).norm().item() == pytest.approx(1.0)


def _sae(d: int, seed: int = 0) -> SAE:
    return SAE(d, 2 * d, tied=True, seed=seed)


def test_ablating_no_feature_leaves_the_model_unchanged_and_ablating_changes_it(model):
    tokens = model.to_tokens("Her name was Alex Hart .")
    sae = _sae(model.cfg.d_model)
    clean = model(tokens)
    same = model.run_with_hooks(tokens, fwd_hooks=lfp.ablation_hooks({0: sae}, {0: []}))
    torch.testing.assert_close(same, clean)
    z = sae.encode(model.run_with_cache(tokens, names_filter=get_act_name("mlp_out", 0))[1][get_act_name("mlp_out", 0)])
    active = int(z.sum(dim=(0, 1)).argmax())
    ablated = model.run_with_hooks(tokens, fwd_hooks=lfp.ablation_hooks({0: sae}, {0: [active]}))
    assert not torch.allclose(ablated, clean)


def test_ablation_removes_the_feature_from_the_mlp_output(model):
    sae = _sae(model.cfg.d_model, seed=1)
    act = torch.randn(2, 3, model.cfg.d_model)
    (_, hook), = lfp.ablation_hooks({0: sae}, {0: [0, 5]})
    z = sae.encode(act)
    expected = act - z[..., 0, None] * sae.W_dec[0] - z[..., 5, None] * sae.W_dec[5]
    torch.testing.assert_close(hook(act), expected)


def test_paired_difference_by_hand():
    d = lfp.paired_difference(np.array([2.0, 3.0, 4.0]), np.array([1.0, 1.0, 1.0]))
    # differences 1, 2, 3: mean 2, sd 1, half-width 1.96 / sqrt(3)
    assert d["mean"] == pytest.approx(2.0)
    assert d["ci95"] == pytest.approx([2 - 1.96 / 3 ** 0.5, 2 + 1.96 / 3 ** 0.5])


def test_settings_take_known_params_only():
    s = lfp.Settings.from_params({"l1_coeff": 0.5, "prompt": "x", "folds": 4}, [3, 1])
    assert s.layers == (3, 1) and s.l1_coeff == 0.5 and s.folds == 4


def test_settings_reject_layers_the_model_does_not_have(model):
    with pytest.raises(lfp.LFPError, match="layers"):
        lfp.Analysis(model, lfp.Settings(layers=(0, model.cfg.n_layers)))
    with pytest.raises(lfp.LFPError, match="l1_coeff"):
        lfp.Settings(layers=(0,), l1_coeff=0.0).check(3)


def test_probe_data_by_hand():
    # identity-like SAE on one layer: codes are ReLU(x); positive (3, 4), neutral 0, negative (1, 0) and (0, 2)
    sae = identity_sae()
    h = get_act_name("mlp_out", 0)
    acts = {"positive": {h: torch.tensor([[3.0, 4.0], [0.0, 1.0]])}, "neutral": {h: torch.zeros(2, 2)},
            "negative": {h: torch.tensor([[1.0, 0.0], [0.0, 2.0]])}}
    triples = [lfp.Triple("a", "good", "plot", "bad", "fine"), lfp.Triple("b", "great", "plot", "awful", "fine")]
    d = lfp.probe_data({0: sae}, [0], triples, acts)
    # deltas 5, 1, -1, -2, rescaled so that the largest magnitude is 4
    np.testing.assert_allclose(d.delta, np.array([5.0, 1.0, -1.0, -2.0]) * 4 / 5, rtol=1e-6)
    assert d.label.tolist() == [1, 1, 0, 0] and d.word.tolist() == ["good", "great", "bad", "awful"]
    assert (np.sign(d.valence) == [1, 1, -1, -1]).all()
    np.testing.assert_allclose(d.X_raw, [[3, 4], [0, 1], [1, 0], [0, 2]])
