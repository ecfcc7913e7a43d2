"""Head scores against transformer_lens.head_detector; composition scores against the bridge's own."""
from __future__ import annotations

import pytest
import torch
from transformer_lens.head_detector import detect_head

from lib import heads as H
from lib.loading import load_model
from lib.sequences import repeated_random_tokens

PROMPTS = ["Her name was Alex Hart . Tomorrow at lunch time Alex Hart", "His name was John Smith . Tomorrow at lunch time John Smith"]


@pytest.fixture(scope="module")
def compat_model():
    return load_model("zoo:tiny-gpt2", compatibility_mode=True)


def test_detection_patterns_by_hand():
    tokens = torch.tensor([1, 7, 8, 7, 8])
    assert H.previous_token_pattern(tokens)[3].tolist() == [0, 0, 1, 0, 0]
    assert H.duplicate_token_pattern(tokens)[3].tolist() == [0, 1, 0, 0, 0]
    assert H.duplicate_token_pattern(tokens)[4].tolist() == [0, 0, 1, 0, 0]
    assert H.induction_pattern(tokens)[3].tolist() == [0, 0, 1, 0, 0]  # after the earlier 7 came 8
    assert H.induction_pattern(tokens)[4].tolist() == [0, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="unknown head kind"):
        H.detection_pattern(tokens, "copy")


@pytest.mark.parametrize("kind", H.KINDS)
@pytest.mark.parametrize("options", [{}, {"exclude_bos": True}, {"exclude_current_token": True}, {"error_measure": "abs"}],
                         ids=["mul", "no-bos", "no-current", "abs"])
def test_head_scores_match_head_detector(model, kind, options):
    expected = detect_head(model, PROMPTS, f"{kind}_head", **options)
    got = H.head_scores(model, PROMPTS, kind, **options)
    # head_detector rounds "abs" scores to three decimals
    atol = 1e-3 if options.get("error_measure") == "abs" else 1e-5
    torch.testing.assert_close(got, expected.float(), atol=atol, rtol=0)


def test_all_head_scores_in_one_pass(model):
    scores = H.all_head_scores(model, PROMPTS)
    for kind in H.KINDS:
        torch.testing.assert_close(scores[kind], H.head_scores(model, PROMPTS, kind))


@pytest.mark.parametrize("mode", ["Q", "K", "V"])
@pytest.mark.parametrize("compat", [False, True], ids=["default", "compat"])
def test_composition_matches_bridge(model, compat_model, mode, compat):
    m = compat_model if compat else model
    expected = m.all_composition_scores(mode).scores
    got = H.composition_scores(m, mode)
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-4)
    assert got[1, :, 0].abs().max() == 0  # only earlier layers compose into later ones


def test_composition_baseline(model):
    base = H.composition_baseline(model, "Q", n=64)
    assert base.shape == (64,) and (base > 0).all() and (base < 1).all()


def test_induction_stripe_on_repeated_tokens(model):
    tokens = repeated_random_tokens(model, 8, batch=3)
    half = 8
    assert torch.equal(tokens[:, -half:], tokens[:, -2 * half : -half])
    scores = H.induction_stripe_scores(model, tokens, half)
    assert scores.shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert ((scores >= 0) & (scores <= 1)).all()
