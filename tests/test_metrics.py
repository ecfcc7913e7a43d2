"""Metrics on logits, for one run and for a stack of runs."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.metrics import (
    Metric,
    answer_logits,
    answer_prob,
    answer_prob_metric,
    answer_rank,
    answer_rank_metric,
    logit_diff,
    logit_diff_metric,
    normalised,
    normalised_logit_diff_metric,
)


def test_logit_diff_by_hand():
    logits = torch.zeros(2, 3, 5)
    logits[0, -1, 1], logits[0, -1, 2] = 3.0, 1.0
    logits[1, -1, 4], logits[1, -1, 0] = -1.0, 2.0
    answers = torch.tensor([[1, 2], [4, 0]])
    assert logit_diff(logits, answers, per_prompt=True).tolist() == [2.0, -3.0]
    assert logit_diff(logits, answers).item() == -0.5
    assert logit_diff(logits, answers[0]).shape == ()  # one answer pair for every prompt
    assert answer_logits(logits, answers).shape == (2, 2)


def test_rank_and_prob():
    logits = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 3.0, 2.0]]])
    assert answer_rank(logits, 1).tolist() == [0]
    assert answer_rank(logits, 0).tolist() == [2]
    assert answer_prob(logits, 1).item() == pytest.approx(torch.softmax(torch.tensor([1.0, 3.0, 2.0]), 0)[1].item())


def test_normalised():
    assert normalised(2.0, 2.0, 5.0).item() == 0.0
    assert normalised(5.0, 2.0, 5.0).item() == 1.0
    with pytest.raises(ValueError, match="equal"):
        normalised_logit_diff_metric(torch.tensor([0, 1]), 1.0, 1.0)


@settings(max_examples=25, deadline=None)
@given(runs=st.integers(1, 4), batch=st.integers(1, 3), seed=st.integers(0, 1000))
def test_batched_metric_equals_one_run_at_a_time(runs, batch, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(runs, batch, 4, 7, generator=g)
    answers = torch.randint(0, 7, (batch, 2), generator=g)
    for metric in [
        logit_diff_metric(answers),
        normalised_logit_diff_metric(answers, -0.5, 1.5),
        answer_prob_metric(answers[:, 0]),
        answer_rank_metric(answers[:, 0]),
    ]:
        assert isinstance(metric, Metric) and metric.batched
        stacked = metric(logits)
        assert stacked.shape == (runs,)
        one_by_one = torch.stack([metric(l) for l in logits])
        torch.testing.assert_close(stacked, one_by_one)
        assert metric(logits[0]).shape == ()
