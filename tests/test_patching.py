"""Activation patching: the same numbers as transformer_lens.patching on GPT-2 and GPT-NeoX, the
properties every causal model has, and the errors on bad input."""
from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tlp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib import patching as P
from lib.errors import HookNameError, HookNotFired, ShapeMismatch
from lib.loading import load_model
from lib.metrics import Metric, logit_diff, logit_diff_metric, per_prompt_logit_diff_metric
from lib.prompts import answer_tokens, paired_tokens
from tests.conftest import ANSWERS, CLEAN, CORRUPT

ATOL = 1e-4
HYPOTHESIS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Setup:
    def __init__(self, ref: str, compatibility_mode: bool = False):
        self.model = load_model(ref, compatibility_mode=compatibility_mode)
        self.clean, self.corrupted = paired_tokens(self.model, CLEAN, CORRUPT)
        self.answers = answer_tokens(self.model, ANSWERS)
        with torch.no_grad():
            self.clean_logits, self.clean_cache = self.model.run_with_cache(self.clean)
            self.corrupted_logits, self.corrupted_cache = self.model.run_with_cache(self.corrupted)
        self.metric = logit_diff_metric(self.answers)
        self.scalar_metric = lambda logits: logit_diff(logits, self.answers)


@pytest.fixture(scope="module", params=["zoo:tiny-gpt2", "zoo:tiny-neox"])
def setup(request) -> Setup:
    return Setup(request.param)


SWEEPS = [
    (P.resid_pre_sweep, tlp.get_act_patch_resid_pre),
    (P.attn_out_sweep, tlp.get_act_patch_attn_out),
    (P.mlp_out_sweep, tlp.get_act_patch_mlp_out),
    (P.head_out_sweep, tlp.get_act_patch_attn_head_out_all_pos),
    (P.head_out_by_pos_sweep, tlp.get_act_patch_attn_head_out_by_pos),
]


def test_resid_post_sweep_matches_transformer_lens(setup):
    expected = tlp.generic_activation_patch(
        setup.model, setup.corrupted, setup.clean_cache, setup.scalar_metric, tlp.layer_pos_patch_setter,
        "resid_post", index_axis_names=("layer", "pos"),
    )
    got = P.layer_pos_sweep(setup.model, setup.corrupted, setup.clean_cache, setup.metric, field="resid_post")
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_fast_path_that_fails_its_check_is_not_used(setup, monkeypatch):
    """Where starting mid-sequence does not reproduce the model, runs compute every position instead."""
    real = P._block_kwargs

    def without_prefix(rec, layer, start, reps):
        kw = real(rec, layer, start, reps)
        return {k: (None if isinstance(v, P._KV) else v) for k, v in kw.items()}

    monkeypatch.setattr(P, "_VERIFIED", P.weakref.WeakKeyDictionary())
    monkeypatch.setattr(P, "_block_kwargs", without_prefix)
    rec = P.recipient_run(setup.model, setup.corrupted)
    assert rec.fast and not rec.truncate and "truncate" in rec.why_slow
    expected = tlp.get_act_patch_resid_pre(setup.model, setup.corrupted, setup.clean_cache, setup.scalar_metric)
    got = P.resid_pre_sweep(setup.model, setup.corrupted, setup.clean_cache, setup.metric, recipient=rec)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_fast_path_is_on(setup):
    rec = P.recipient_run(setup.model, setup.corrupted)
    assert rec.fast and rec.truncate, rec.why_slow
    assert all(kv is not None and kv[0].shape[-2] == setup.corrupted.shape[1] for kv in rec.kv)
    assert P.fast_path_status(setup.model, setup.corrupted) == (True, True, "")


def _no_cache_handed(monkeypatch):
    monkeypatch.setattr(P, "_is_kv_cache", lambda value: False)


def _only_the_blocks_own_slot(monkeypatch):
    monkeypatch.setattr(P, "_kv_names", lambda slots: slots)


def _fast_path_breaks(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("broken")

    monkeypatch.setattr(P, "_run_blocks", broken)


def _recording_breaks(monkeypatch):
    def broken(slots):
        raise RuntimeError("broken")

    monkeypatch.setattr(P, "_kv_names", broken)


def _blocks_not_callable_one_by_one(monkeypatch):
    def unbindable(block, args, kwargs):
        raise TypeError("no signature")

    monkeypatch.setattr(P, "_bind", unbindable)


@pytest.mark.parametrize("disturb, because", [
    (None, None),
    (_no_cache_handed, None),  # the cache it does not see then goes into the replayed calls: a fault or not
    (_only_the_blocks_own_slot, None),  # whether the attention reads the block's own slot depends on the version
    (_fast_path_breaks, "fast path"),
    (_recording_breaks, "recording the block calls failed"),
    (_blocks_not_callable_one_by_one, "one by one"),
])
@pytest.mark.parametrize("n_pos", [1, None])
def test_why_slow_is_said_whenever_a_path_is_off(setup, monkeypatch, disturb, because, n_pos):
    monkeypatch.setattr(P, "_VERIFIED", P.weakref.WeakKeyDictionary())
    if disturb is not None:
        disturb(monkeypatch)
    tokens = setup.corrupted[:, :n_pos]
    rec = P.recipient_run(setup.model, tokens)
    assert rec.fast or not rec.truncate
    if not (rec.fast and rec.truncate):
        assert rec.why_slow
    if n_pos == 1 and rec.fast:
        assert "single position" in rec.why_slow
    elif because is not None:
        assert because in rec.why_slow
    # whichever path runs, a patch that copies the recipient's own values gives the model's own logits
    name = "blocks.1.hook_resid_pre"
    own = P.run_patches(setup.model, tokens, {name: rec.acts[name]}, [[(name, (slice(None), -1))]],
                        recipient=rec, skip_identical=False)[0]
    with torch.no_grad():
        torch.testing.assert_close(own, setup.model(tokens), atol=ATOL, rtol=0)


def test_kv_problem_says_why_positions_cannot_be_skipped():
    assert "single position" in P._kv_problem(1, [["cache", "layer_past"]], [1])
    assert "no key/value cache" in P._kv_problem(5, [["layer_past"], []], [1, 0])
    assert "never used" in P._kv_problem(5, [["cache", "layer_past"]] * 2, [1, 0])
    assert "more than once" in P._kv_problem(5, [["cache", "layer_past"]] * 2, [1, 2])
    assert P._kv_problem(5, [["cache", "layer_past"]] * 2, [1, 1]) == ""


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_check_tolerance_is_relative_to_the_logits_scale(scale):
    reference = torch.linspace(-1.0, 1.0, 101) * scale
    tol = P.check_tolerance(reference)
    assert tol == pytest.approx(P._CHECK_FACTOR * 1.3e-6 * scale)
    at_zero = torch.zeros_like(reference)
    at_zero[50] = 1.0  # the logit that is 0: the scale of all logits sets the limit, not its own size
    assert P.mismatch(reference + 0.99 * tol * at_zero, reference) == ""
    assert "tolerance" in P.mismatch(reference + 1.01 * tol * at_zero, reference)
    not_a_number = reference.clone()
    not_a_number[50] = float("nan")
    assert P.mismatch(not_a_number, reference)
    assert P.mismatch(reference[:-1], reference)


def test_check_tolerance_in_half_precision_is_capped():
    reference = torch.linspace(-1.0, 1.0, 101, dtype=torch.bfloat16) * 8
    assert P.check_tolerance(reference) == pytest.approx(P._CHECK_MAX_RTOL * 8)


@pytest.mark.parametrize("ours,reference", SWEEPS, ids=[s[0].__name__ for s in SWEEPS])
def test_sweeps_match_transformer_lens(setup, ours, reference):
    expected = reference(setup.model, setup.corrupted, setup.clean_cache, setup.scalar_metric)
    got = ours(setup.model, setup.corrupted, setup.clean_cache, setup.metric)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    # a plain scalar metric, and every patch actually run, give the same numbers
    plain = ours(setup.model, setup.corrupted, setup.clean_cache, setup.scalar_metric, skip_identical=False)
    torch.testing.assert_close(plain, expected, atol=ATOL, rtol=0)


def test_per_prompt_metric_gives_each_prompts_own_sweep(setup):
    """A per-prompt metric over a batch sweep equals the reference sweep of each prompt alone."""
    n_layers, n_heads, batch = setup.model.cfg.n_layers, setup.model.cfg.n_heads, len(setup.corrupted)
    runs = P.run_patches(setup.model, setup.corrupted, setup.clean_cache,
                         [P.head_patches([(layer, head)]) for layer in range(n_layers) for head in range(n_heads)],
                         per_prompt_logit_diff_metric(setup.answers))
    assert runs.shape == (n_layers * n_heads, batch)
    for i in range(batch):
        cache = {k: v[i : i + 1] for k, v in setup.clean_cache.items()}
        alone = tlp.get_act_patch_attn_head_out_all_pos(setup.model, setup.corrupted[i : i + 1], cache,
                                                        lambda logits, i=i: logit_diff(logits, setup.answers[i : i + 1]))
        torch.testing.assert_close(runs[:, i].reshape(n_layers, n_heads), alone, atol=ATOL, rtol=0)
    undeclared = Metric(lambda logits: logit_diff(logits, setup.answers, per_prompt=True))  # [runs, batch], not said
    with pytest.raises(ValueError, match="one value per run"):
        P.head_out_sweep(setup.model, setup.corrupted, setup.clean_cache, undeclared)


def test_one_prompt_and_one_thread_of_reference(setup):
    tokens, cache = setup.corrupted[:1], {k: v[:1] for k, v in setup.clean_cache.items()}
    metric = lambda logits: logit_diff(logits, setup.answers[:1])
    expected = tlp.get_act_patch_attn_head_out_by_pos(setup.model, tokens, cache, metric)
    torch.testing.assert_close(P.head_out_by_pos_sweep(setup.model, tokens, cache, metric), expected, atol=ATOL, rtol=0)


def test_hooked_path_matches(setup):
    fast = P.resid_pre_sweep(setup.model, setup.corrupted, setup.clean_cache, setup.metric)
    slow = P.resid_pre_sweep(setup.model, setup.corrupted, setup.clean_cache, setup.metric, fast=False)
    torch.testing.assert_close(fast, slow, atol=ATOL, rtol=0)


def test_compatibility_mode_matches_transformer_lens():
    s = Setup("zoo:tiny-gpt2", compatibility_mode=True)
    expected = tlp.get_act_patch_attn_head_out_by_pos(s.model, s.corrupted, s.clean_cache, s.scalar_metric)
    torch.testing.assert_close(P.head_out_by_pos_sweep(s.model, s.corrupted, s.clean_cache, s.metric), expected, atol=ATOL, rtol=0)


def _hook_z(cache, heads, pos=None):
    where = slice(None) if pos is None else pos

    def hook(z, hook):
        layer = int(hook.name.split(".")[1])
        for l, h in heads:
            if l == layer:
                z[:, where, h] = cache[hook.name][:, where, h]
        return z

    return hook


@pytest.mark.parametrize("pos", [None, -1])
def test_patch_heads_matches_hooked_run(setup, pos):
    model = setup.model
    heads = [(1, 2), (2, 0), (2, 3)]
    hook = _hook_z(setup.clean_cache, heads, pos)
    names = sorted({f"blocks.{l}.attn.hook_z" for l, _ in heads})
    with torch.no_grad():
        expected = setup.scalar_metric(model.run_with_hooks(setup.corrupted, fwd_hooks=[(n, hook) for n in names]))
    got = P.patch_heads(model, setup.corrupted, setup.clean_cache, heads, setup.metric, pos=pos)
    torch.testing.assert_close(got, expected.float(), atol=ATOL, rtol=0)


def test_generic_runs_and_logits(setup):
    model = setup.model
    runs = [
        [("blocks.1.hook_resid_pre", (slice(None), 3)), ("blocks.2.attn.hook_z", (slice(None), 5, 1))],
        [("blocks.0.hook_mlp_out", (slice(None), slice(None)))],
        [("hook_embed", (slice(None), 4))],
        [],
    ]
    got = P.run_patches(model, setup.corrupted, setup.clean_cache, runs)
    for patches, logits in zip(runs, got):
        hooks = []
        for name, index in patches:
            def hook(act, hook, _name=name, _index=index):
                act[_index] = setup.clean_cache[_name][_index]
                return act
            hooks.append((name, hook))
        with torch.no_grad():
            expected = model.run_with_hooks(setup.corrupted, fwd_hooks=hooks)
        torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)
    one = P.patched_logits(model, setup.corrupted, setup.clean_cache, runs[0])
    torch.testing.assert_close(one, got[0], atol=ATOL, rtol=0)


def test_cross_model_matches_transformer_lens(setup):
    """Tuned into base on the same tokens: the donor cache comes from another model of the same shape."""
    base = setup.model
    tuned = load_model(base.checkpoint.ref)
    with torch.no_grad():
        for p in tuned.blocks[-1].parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in tuned.blocks[-2].parameters():
            p.add_(0.05 * torch.randn_like(p))
    tokens = setup.clean
    cache = P.donor_cache(tuned, tokens, recipient_model=base)
    for ours, reference in [SWEEPS[0], SWEEPS[4]]:
        expected = reference(base, tokens, cache, setup.scalar_metric)
        got = ours(base, tokens, cache, setup.metric)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    # the last block's output at every position, from the tuned model, gives the tuned model's logits
    # (the two share the final LayerNorm and the unembedding)
    everything = [(f"blocks.{base.cfg.n_layers - 1}.hook_resid_post", (slice(None), slice(None)))]
    with torch.no_grad():
        tuned_logits = tuned(tokens)
    torch.testing.assert_close(P.patched_logits(base, tokens, cache, everything), tuned_logits, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# Properties


FIELDS = ["resid_pre", "attn_out", "mlp_out", "z"]


def _patch(field: str, layer: int, pos, head: int = 0):
    name = P.get_act_name(field, layer)
    return (name, (slice(None), pos, head)) if field == "z" else (name, (slice(None), pos))


@HYPOTHESIS
@given(data=st.data())
def test_patching_with_own_cache_changes_nothing(setup, data):
    model = setup.model
    field = data.draw(st.sampled_from(FIELDS))
    layer = data.draw(st.integers(0, model.cfg.n_layers - 1))
    pos = data.draw(st.integers(0, setup.corrupted.shape[1] - 1))
    got = P.patched_logits(model, setup.corrupted, setup.corrupted_cache, [_patch(field, layer, pos)])
    torch.testing.assert_close(got, setup.corrupted_logits, atol=ATOL, rtol=0)


@HYPOTHESIS
@given(data=st.data())
def test_patching_position_p_never_changes_earlier_logits(setup, data):
    """Checked on the plain forward pass with hooks (the fast path assumes it), then fast == plain."""
    model = setup.model
    n = setup.corrupted.shape[1]
    donor_tokens = torch.tensor([data.draw(st.lists(st.integers(4, model.cfg.d_vocab - 1), min_size=n, max_size=n)) for _ in range(2)])
    with torch.no_grad():
        _, donor = model.run_with_cache(donor_tokens)
    field = data.draw(st.sampled_from(FIELDS))
    layer = data.draw(st.integers(0, model.cfg.n_layers - 1))
    pos = data.draw(st.integers(0, n - 1))
    patch = [_patch(field, layer, pos, data.draw(st.integers(0, model.cfg.n_heads - 1)))]
    plain = P.patched_logits(model, setup.corrupted, donor, patch, fast=False)
    torch.testing.assert_close(plain[:, :pos], setup.corrupted_logits[:, :pos], atol=ATOL, rtol=0)
    torch.testing.assert_close(P.patched_logits(model, setup.corrupted, donor, patch), plain, atol=ATOL, rtol=0)


@HYPOTHESIS
@given(data=st.data())
def test_runs_start_where_the_donor_first_differs(setup, data):
    """A donor that agrees with the recipient before position k: runs patched over many positions start at
    the first position their patches change, and give a full forward pass's logits, whatever the index of
    the position axis (all, a range with a step, one position counted from either end)."""
    model, n = setup.model, setup.corrupted.shape[1]
    k = data.draw(st.integers(0, n - 1))
    donor_tokens = setup.corrupted.clone()
    donor_tokens[0, k:] = torch.tensor(data.draw(st.lists(st.integers(4, model.cfg.d_vocab - 1), min_size=n - k, max_size=n - k)))
    with torch.no_grad():
        _, donor = model.run_with_cache(donor_tokens)
    a = data.draw(st.integers(0, n - 1))
    positions = st.sampled_from([slice(None), slice(a, data.draw(st.integers(a + 1, n)), data.draw(st.integers(1, 3))), a, a - n])
    runs = []
    for _ in range(3):
        field = data.draw(st.sampled_from(FIELDS))
        patch = _patch(field, data.draw(st.integers(0, model.cfg.n_layers - 1)), 0, data.draw(st.integers(0, model.cfg.n_heads - 1)))
        name, index = patch
        runs.append([(name, index[:1] + (data.draw(positions),) + index[2:])])
    runs.append(runs[0] + runs[1])
    fast = P.run_patches(model, setup.corrupted, donor, runs)
    torch.testing.assert_close(fast, P.run_patches(model, setup.corrupted, donor, runs, fast=False), atol=ATOL, rtol=0)


@HYPOTHESIS
@given(layer=st.integers(0, 2), fast=st.booleans())
def test_patching_every_position_of_a_layer_gives_the_donor_run(setup, layer, fast):
    """Clean residual stream at every position of a layer, patched into the corrupted run: the clean run."""
    patch = [(P.get_act_name("resid_pre", layer), (slice(None), slice(None)))]
    got = P.patched_logits(setup.model, setup.corrupted, setup.clean_cache, patch, fast=fast)
    torch.testing.assert_close(got, setup.clean_logits, atol=ATOL, rtol=0)
    # and the other way round: corrupted into clean gives the corrupted run
    back = P.patched_logits(setup.model, setup.clean, setup.corrupted_cache, patch, fast=fast)
    torch.testing.assert_close(back, setup.corrupted_logits, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# Sanity and bad input


def _no_hooks_left(model) -> bool:
    return all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())


def test_unknown_hook_name_lists_closest(setup):
    with pytest.raises(HookNameError, match="closest: .*blocks.1.hook_resid_pre"):
        P.patched_logits(setup.model, setup.corrupted, setup.clean_cache, [("blocks.1.hook_resid_pree", (slice(None), 0))])


def test_neox_has_no_resid_mid():
    model = load_model("zoo:tiny-neox")
    tokens = model.to_tokens("Her name was Alex")
    with pytest.raises(HookNameError, match="hook_resid_mid"):
        P.patched_logits(model, tokens, {}, [("blocks.0.hook_resid_mid", (slice(None), 0))])


@pytest.mark.filterwarnings("ignore:run_with_cache")
def test_hook_that_never_fires_is_an_error(setup):
    model = setup.model
    name = "blocks.1.attn.hook_result"  # only runs after model.set_use_attn_result(True)
    donor = {name: torch.zeros(*setup.corrupted.shape, model.cfg.n_heads, model.cfg.d_model)}
    with pytest.raises(HookNotFired, match="hook_result"):
        P.patched_logits(model, setup.corrupted, donor, [(name, (slice(None), 0, 0))])
    assert _no_hooks_left(model)


def test_hooks_removed_when_metric_raises(setup):
    def broken(logits):
        raise RuntimeError("metric failed")

    with pytest.raises(RuntimeError, match="metric failed"):
        P.resid_pre_sweep(setup.model, setup.corrupted, setup.clean_cache, broken)
    assert _no_hooks_left(setup.model)


def test_hooks_removed_when_patch_raises(setup):
    name = "blocks.1.hook_resid_pre"
    bad = {name: setup.clean_cache[name].to(torch.float64)[:, :, :3]}
    with pytest.raises(ShapeMismatch, match=name):
        P.patched_logits(setup.model, setup.corrupted, bad, [(name, (slice(None), 0))])
    assert _no_hooks_left(setup.model)


@pytest.mark.parametrize("fast", [True, False])
def test_hooks_removed_when_a_hook_raises_mid_forward(setup, fast):
    bad_head = [("blocks.1.attn.hook_z", (slice(None), 3, setup.model.cfg.n_heads + 5))]
    with pytest.raises(IndexError):
        P.patched_logits(setup.model, setup.corrupted, setup.clean_cache, bad_head, fast=fast)
    assert _no_hooks_left(setup.model)


def test_donor_without_the_activation(setup):
    with pytest.raises(HookNameError, match="donor cache holds no activation"):
        P.patched_logits(setup.model, setup.corrupted, {}, [("blocks.1.hook_resid_pre", (slice(None), 0))])


def test_cross_model_shapes_must_match(setup):
    other = load_model("zoo:tiny-gpt2-nobos")
    with pytest.raises(ShapeMismatch, match="d_vocab"):
        P.check_same_shape(setup.model, other)
    with pytest.raises(ShapeMismatch, match="d_vocab"):
        P.donor_cache(other, setup.corrupted.clamp(max=other.cfg.d_vocab - 1), recipient_model=setup.model)


def test_training_mode_refused(setup):
    setup.model.train()
    try:
        with pytest.raises(ValueError, match="eval"):
            P.resid_pre_sweep(setup.model, setup.corrupted, setup.clean_cache, setup.metric)
    finally:
        setup.model.eval()


def test_final_position_metric_sees_the_same_final_logits(setup):
    """A metric that reads only the last position gets that position alone, with the values it would
    read from the whole sequence; a run that patches ln_final still gets every position."""
    runs = [[("blocks.1.hook_resid_pre", (slice(None), 3))], [("blocks.0.attn.hook_z", (slice(None), -1, 1))]]
    at_ln_final = [[("ln_final.hook_normalized", (slice(None), 2))]]
    n_pos = setup.corrupted.shape[-1]
    for patches, positions in ((runs, 1), (at_ln_final, n_pos)):
        seen = set()

        def final(logits, seen=seen):
            seen.add(logits.shape[-2])
            return logits[..., -1, :].sum(-1).mean(-1)

        whole = P.run_patches(setup.model, setup.corrupted, setup.clean_cache, patches, Metric(final),
                              skip_identical=False)
        assert seen == {n_pos}
        seen.clear()
        last = P.run_patches(setup.model, setup.corrupted, setup.clean_cache, patches,
                             Metric(final, final_position_only=True), skip_identical=False)
        assert seen == {positions}
        torch.testing.assert_close(last, whole, atol=ATOL, rtol=0)
