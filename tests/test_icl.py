"""claims.olsson_icl.icl and lib.curves: the jump detector on synthetic curves, the ICL score by hand, held-out sequences and
scores on the tiny zoo models."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from claims.olsson_icl import icl as ICL
from lib.curves import jump
from lib.heads import induction_stripe_scores
from lib.sequences import repeated_random_tokens


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 30), data=st.data())
def test_jump_finds_the_step_of_a_step_curve(n, data):
    k = data.draw(st.integers(1, n - 1))  # first index after the step
    height = data.draw(st.floats(0.5, 10))
    noise = data.draw(st.lists(st.floats(-0.1, 0.1), min_size=n, max_size=n))
    steps = [25 * i for i in range(n)]
    values = [height * (i >= k) + e for i, e in enumerate(noise)]
    rise = jump(steps, values, "rise")
    assert (rise.before, rise.step) == (steps[k - 1], steps[k])
    assert rise.size == pytest.approx(height + noise[k] - noise[k - 1])
    fall = jump(steps, [-v for v in values], "fall")
    assert (fall.before, fall.step, fall.size) == (rise.before, rise.step, rise.size)


def test_jump_by_hand():
    j = jump([0, 10, 20, 30], [0.0, 0.1, 0.9, 1.0], "rise")
    assert (j.before, j.step) == (10, 20)
    assert j.size == pytest.approx(0.8) and j.share == pytest.approx(0.8)
    flat = jump([0, 10], [1.0, 1.0], "fall")
    assert flat.size == 0.0 and flat.share == 0.0
    assert jump([0, 1, 2], [3.0, 1.0, 2.0], "rise").size == pytest.approx(1.0)


@pytest.mark.parametrize("steps, values, direction, match", [
    ([0], [1.0], "rise", "at least two"),
    ([0, 1], [1.0], "rise", "at least two"),
    ([0, 2, 1], [1.0, 2.0, 3.0], "rise", "increase strictly"),
    ([0, 1], [1.0, 2.0], "up", "'rise' or 'fall'"),
])
def test_jump_refuses_bad_curves(steps, values, direction, match):
    with pytest.raises(ICL.CurveError, match=match):
        jump(steps, values, direction)


def test_icl_score_by_hand():
    losses = torch.tensor([float("nan"), 4.0, 4.0, 2.0, 1.0])
    assert ICL.icl_score(losses, [1, 2], [3, 4]) == pytest.approx(1.5 - 4.0)
    assert ICL.icl_score(losses, [1, 1], [4, 4]) == pytest.approx(-3.0)
    for early, late in (([0, 2], [3, 4]), ([1, 2], [3, 5]), ([2, 1], [3, 4])):
        with pytest.raises(ICL.CurveError, match="must lie within 1..4"):
            ICL.icl_score(losses, early, late)


def test_icl_scores_per_sequence_by_hand():
    losses = torch.tensor([[float("nan"), 4.0, 4.0, 2.0, 1.0], [float("nan"), 3.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(ICL.icl_scores(losses, [1, 2], [3, 4]), torch.tensor([-2.5, -1.0]))
    assert ICL.icl_score(losses.nanmean(0), [1, 2], [3, 4]) == pytest.approx(-1.75)


def test_change_per_sequence_between_two_checkpoints(model):
    data = {"n": 3, "length": 16, "shortest": 3, "longest": 5}
    assert ICL.change_per_sequence(lambda step: model, 0, 1, data=data, early=[1, 2], late=[10, 15]).abs().max() == 0
    seen = []
    ICL.change_per_sequence(lambda step: seen.append(step) or model, 10, 20, data=data, early=[1, 2], late=[10, 15])
    assert seen == [10, 20]


def test_repeated_segments_repeat_distinct_ordinary_tokens(model):
    tokens = ICL.repeated_segments(model, 20, 30, 3, 8, seed=0)
    bos = int(model.cfg.default_prepend_bos and model.tokenizer.bos_token_id is not None)
    assert tokens.shape == (20, 30 + bos)
    if bos:
        assert (tokens[:, 0] == model.tokenizer.bos_token_id).all()
    special = set(model.tokenizer.all_special_ids)
    for row in tokens[:, bos:].tolist():
        k = next(i for i in range(1, len(row)) if row[i] == row[0])  # the segment length
        assert 3 <= k <= 8 and len(set(row[:k])) == k and not special & set(row)
        assert all(row[i] == row[i - k] for i in range(k, len(row)))
    assert torch.equal(tokens, ICL.repeated_segments(model, 20, 30, 3, 8, seed=0))
    assert not torch.equal(tokens, ICL.repeated_segments(model, 20, 30, 3, 8, seed=1))
    with pytest.raises(ICL.CurveError, match="segment lengths"):
        ICL.repeated_segments(model, 1, 10, 5, 4)


def test_token_losses_match_cross_entropy(model):
    tokens = ICL.repeated_segments(model, 4, 12, 3, 5, seed=2)
    losses = ICL.token_losses(model, tokens)
    with torch.no_grad():
        logits = model(tokens)
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    assert torch.isnan(losses[0])
    torch.testing.assert_close(losses[1:], expected.view(4, -1).mean(0), atol=1e-5, rtol=1e-5)


def test_dynamics_over_a_series(model):
    data = {"n": 4, "length": 20, "shortest": 3, "longest": 6, "seed": 3}
    d = ICL.dynamics(lambda step: model, [0, 5, 9], data=data, early=[1, 3], late=[15, 19], probe_half=6, probe_batch=4)
    assert d.steps == [0, 5, 9] and len(set(d.icl)) == 1 and len(set(d.induction)) == 1
    scores = induction_stripe_scores(model, repeated_random_tokens(model, 6, 4, 0), 6)
    assert d.induction[0] == pytest.approx(float(scores.max()))
    layer, head = (int(x) for x in d.induction_head[0].split("."))
    assert float(scores[layer, head]) == pytest.approx(float(scores.max()))
    tokens = ICL.repeated_segments(model, 4, 20, 3, 6, seed=3)
    assert d.icl[0] == pytest.approx(ICL.icl_score(ICL.token_losses(model, tokens), [1, 3], [15, 19]))
    with pytest.raises(ICL.CurveError, match="need \\['shortest'\\]"):
        ICL.held_out(model, {"n": 1, "length": 5, "longest": 3})
    with pytest.raises(ICL.CurveError, match="at least two checkpoints"):
        ICL.dynamics(lambda step: model, [0], data=data, early=[1, 3], late=[15, 19], probe_half=6)


def test_dynamics_figure_draws(model):
    import matplotlib.pyplot as plt

    d = ICL.Dynamics([0, 10, 20], [0.0, -0.1, -2.0], [0.05, 0.1, 0.8], ["1.0", "1.0", "1.2"])
    fig = ICL.dynamics_figure(d, jump(d.steps, d.icl, "fall"), jump(d.steps, d.induction, "rise"))
    assert any("jump 10->20" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    plt.close(fig)
