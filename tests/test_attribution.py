"""Logit lens, direct logit attribution and attribution patching."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib import attribution as A
from lib import patching as P
from lib.loading import load_model
from lib.metrics import logit_diff
from lib.prompts import answer_tokens, paired_tokens
from tests.conftest import ANSWERS, CLEAN, CORRUPT

HYPOTHESIS = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _perturb_readout(model, seed=0):
    """Non-trivial final LayerNorm and unembedding bias, as a trained checkpoint has."""
    g = torch.Generator().manual_seed(seed)
    ln = model.ln_final.original_component
    with torch.no_grad():
        ln.weight.mul_(1 + 0.5 * torch.randn(ln.weight.shape, generator=g))
        ln.bias.add_(0.3 * torch.randn(ln.bias.shape, generator=g))
        bias = model.unembed.original_component.bias
        if bias is not None:
            bias.add_(0.3 * torch.randn(bias.shape, generator=g))
    return model


@pytest.fixture(
    scope="module",
    params=[("zoo:tiny-gpt2", ""), ("zoo:tiny-neox", ""), ("zoo:tiny-gpt2", "perturb"), ("zoo:tiny-neox", "perturb"),
            ("zoo:tiny-neox", "perturb+fold")],
    ids=["gpt2", "neox", "gpt2-perturbed-ln", "neox-perturbed-ln", "neox-perturbed-ln-folded"],
)
def model(request):
    ref, how = request.param
    m = load_model(ref)
    if "perturb" in how:
        _perturb_readout(m)
    if "fold" in how:
        m.enable_compatibility_mode()  # LayerNorm folded into the weights after they were perturbed
    return m


@HYPOTHESIS
@given(data=st.data())
def test_components_sum_to_the_logit_diff(model, data):
    n = data.draw(st.integers(3, 12))
    tokens = torch.tensor([data.draw(st.lists(st.integers(4, model.cfg.d_vocab - 1), min_size=n, max_size=n)) for _ in range(2)])
    answers = torch.tensor([data.draw(st.lists(st.integers(4, model.cfg.d_vocab - 1), min_size=2, max_size=2, unique=True)) for _ in range(2)])
    pos = data.draw(st.sampled_from([-1, n // 2]))
    logits, cache = A.run_for_attribution(model, tokens)
    expected = logit_diff(logits, answers, per_prompt=True, pos=pos)
    values, labels = A.component_logit_diffs(model, cache, answers, pos=pos, per_prompt=True)
    assert "unattributed" not in labels and labels[-1] == "bias"
    torch.testing.assert_close(values.sum(0), expected, atol=1e-4, rtol=0)
    lens, points = A.logit_lens(model, cache, answers, pos=pos, per_prompt=True)
    assert points[-1] == "final_post" and len(points) == model.cfg.n_layers + 1
    torch.testing.assert_close(lens[-1] + A.readout_bias(model, answers, 2), expected, atol=1e-4, rtol=0)


def test_heads_and_output_bias_make_the_attention_output(model):
    tokens = paired_tokens(model, CLEAN, CORRUPT)[0]
    answers = answer_tokens(model, ANSWERS)
    _, cache = A.run_for_attribution(model, tokens)
    heads = A.head_logit_diffs(model, cache, answers)
    assert heads.shape == (model.cfg.n_layers, model.cfg.n_heads)
    per_layer = A.layer_logit_diffs(model, cache, answers)["attn"]
    b_O = model.b_O.detach()[:, None].expand(-1, tokens.shape[0], -1)
    bias_part = A.project_logit_diff(model, cache, b_O, answers).mean(-1)
    torch.testing.assert_close(heads.sum(1) + bias_part, per_layer, atol=1e-4, rtol=0)


def test_logit_lens_matches_transformer_lens_cache_helpers():
    """In compatibility mode (LayerNorm folded) TransformerLens' own recipe gives the same curve."""
    model = load_model("zoo:tiny-gpt2", compatibility_mode=True)
    tokens = paired_tokens(model, CLEAN, CORRUPT)[0]
    answers = answer_tokens(model, ANSWERS)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    stack, labels = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)
    scaled = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
    directions = model.tokens_to_residual_directions(answers)
    expected = (scaled * (directions[:, 0] - directions[:, 1])).sum(-1).mean(-1)
    ours, our_labels = A.logit_lens(model, cache, answers, incl_mid=True)
    assert our_labels == labels
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)
    per_head, _ = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
    scaled_heads = cache.apply_ln_to_stack(per_head, layer=-1, pos_slice=-1)
    expected_heads = (scaled_heads * (directions[:, 0] - directions[:, 1])).sum(-1).mean(-1)
    torch.testing.assert_close(A.head_logit_diffs(model, cache, answers).flatten(), expected_heads, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def patching_setup(model):
    clean, corrupted = paired_tokens(model, CLEAN, CORRUPT)
    answers = answer_tokens(model, ANSWERS)
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        _, corrupted_cache = model.run_with_cache(corrupted)
    return corrupted, clean_cache, corrupted_cache, (lambda logits: logit_diff(logits, answers))


def test_attribution_patching_shapes_and_zero_delta(model, patching_setup):
    corrupted, clean_cache, corrupted_cache, metric = patching_setup
    estimate = A.attribution_patch(model, corrupted, clean_cache, metric)
    exact = {
        "resid_pre": P.resid_pre_sweep, "attn_out": P.attn_out_sweep, "mlp_out": P.mlp_out_sweep,
        "z": P.head_out_by_pos_sweep, "z_all_pos": P.head_out_sweep,
    }
    for field, sweep in exact.items():
        assert estimate[field].shape == sweep(model, corrupted, clean_cache, metric).shape
    with torch.no_grad():
        unpatched = metric(model(corrupted))
    same = A.attribution_patch(model, corrupted, corrupted_cache, metric)
    for values in same.values():
        torch.testing.assert_close(values, torch.full_like(values, float(unpatched)), atol=1e-5, rtol=0)


def test_attribution_patching_is_the_first_order_term(model, patching_setup):
    """For a small donor perturbation the linear estimate agrees with exact patching to second order."""
    corrupted, _, corrupted_cache, metric = patching_setup
    g = torch.Generator().manual_seed(1)
    eps = 1e-3
    donor = {k: v + eps * v.abs().mean() * torch.randn(v.shape, generator=g) for k, v in corrupted_cache.items() if v.is_floating_point()}
    estimate = A.attribution_patch(model, corrupted, donor, metric, ["resid_pre", "z"])
    exact = P.resid_pre_sweep(model, corrupted, donor, metric)
    with torch.no_grad():
        unpatched = float(metric(model(corrupted)))
    change = (exact - unpatched).abs().max()
    assert change > 0
    assert (estimate["resid_pre"] - exact).abs().max() < 0.05 * change + 1e-6


def test_attribution_report(model, patching_setup):
    corrupted, clean_cache, _, metric = patching_setup
    report = A.attribution_report(model, corrupted, clean_cache, metric, ["resid_pre", "z"])
    for row in report.values():
        assert row["estimate"].shape == row["exact"].shape
        assert -1 <= row["pearson"] <= 1 and -1 <= row["spearman"] <= 1


def test_attribute_then_confirm(model, patching_setup):
    corrupted, clean_cache, _, metric = patching_setup
    result = A.attribute_then_confirm(model, corrupted, clean_cache, metric, "z", top_k=8)
    exact = P.head_out_by_pos_sweep(model, corrupted, clean_cache, metric)
    assert len(result.cells) == 8
    torch.testing.assert_close(result.exact, torch.stack([exact[c] for c in result.cells]), atol=1e-4, rtol=0)
    full = A.correlation(result.estimate, exact)
    assert full["pearson"] > 0.5, full
    assert set(result.correlation) == {"pearson", "spearman"}
