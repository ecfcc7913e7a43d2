"""Metrics on logits: logit diff, answer rank and probability, and the normalised patching metric.

Every function accepts logits [batch, pos, d_vocab] and also a stack of runs [runs, batch, pos, d_vocab];
leading dimensions pass through. The `*_metric` factories build patching metrics: called on one run's
logits they return a scalar (the contract of `transformer_lens.patching`), called on a stack of runs
they return one value per run, which is how the batched sweeps of `lib.patching` call them.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

Logits = Float[Tensor, "... batch pos d_vocab"]


def _final(logits: Tensor, pos: int) -> Tensor:
    return logits[..., pos, :]


def answer_logits(logits: Logits, answer_tokens: Int[Tensor, "batch n"] | Int[Tensor, " n"], pos: int = -1) -> Tensor:
    """Logits of each answer at `pos`: [..., batch, n]."""
    final = _final(logits, pos)
    index = torch.as_tensor(answer_tokens, device=final.device)
    if index.ndim == 1:
        index = index.expand(final.shape[-2], -1)
    return final.gather(-1, index.expand(*final.shape[:-1], index.shape[-1]))


def logit_diff(
    logits: Logits, answer_tokens: Int[Tensor, "batch 2"] | Int[Tensor, " 2"], per_prompt: bool = False, pos: int = -1
) -> Tensor:
    """logit(answer 0) - logit(answer 1) at the last position; mean over prompts unless `per_prompt`."""
    answers = answer_logits(logits, answer_tokens, pos)
    diff = answers[..., 0] - answers[..., 1]
    return diff if per_prompt else diff.mean(-1)


def answer_rank(logits: Logits, answer: int | Int[Tensor, " batch"], pos: int = -1) -> Int[Tensor, "... batch"]:
    """Rank of the answer among all tokens at `pos` (0 = top prediction), per prompt."""
    final = _final(logits, pos)
    index = torch.as_tensor(answer, device=final.device).reshape(-1, 1).expand(final.shape[-2], 1)
    own = final.gather(-1, index.expand(*final.shape[:-1], 1))
    return (final > own).sum(-1)


def answer_prob(logits: Logits, answer: int | Int[Tensor, " batch"], pos: int = -1) -> Float[Tensor, "... batch"]:
    """Probability of the answer at `pos`, per prompt."""
    final = _final(logits, pos).float().softmax(-1)
    index = torch.as_tensor(answer, device=final.device).reshape(-1, 1).expand(final.shape[-2], 1)
    return final.gather(-1, index.expand(*final.shape[:-1], 1))[..., 0]


def normalised(value: Tensor | float, unpatched: Tensor | float, donor: Tensor | float) -> Tensor:
    """(value - unpatched) / (donor - unpatched): 0 = unpatched run, 1 = the donor's value (seed 000)."""
    value = torch.as_tensor(value)
    return (value - unpatched) / (torch.as_tensor(donor) - unpatched)


class Metric:
    """A patching metric: scalar on one run's logits [batch, pos, vocab], [runs] on a stack [runs, batch, pos, vocab].

    `final_position_only`: the metric reads nothing but the last position, so a sweep may hand it logits of
    that position alone ([runs, batch, 1, vocab]) and skip unembedding the others. `per_prompt`: it gives
    one value per prompt of the batch ([runs, batch] on a stack), so one sweep serves a batch of prompts."""

    batched = True

    def __init__(self, fn: Callable[[Tensor], Tensor], name: str = "metric", final_position_only: bool = False,
                 per_prompt: bool = False):
        self.fn = fn
        self.name = name
        self.final_position_only = final_position_only
        self.per_prompt = per_prompt

    def __call__(self, logits: Tensor) -> Tensor:
        return self.fn(logits)

    def __repr__(self) -> str:
        return f"Metric({self.name})"


def logit_diff_metric(answer_tokens: Tensor) -> Metric:
    """Mean logit diff over prompts."""
    return Metric(lambda logits: logit_diff(logits, answer_tokens), "logit_diff", final_position_only=True)


def per_prompt_logit_diff_metric(answer_tokens: Tensor) -> Metric:
    """The logit diff of each prompt: [batch] on one run, [runs, batch] on a stack."""
    return Metric(lambda logits: logit_diff(logits, answer_tokens, per_prompt=True), "per_prompt_logit_diff",
                  final_position_only=True, per_prompt=True)


def normalised_logit_diff_metric(answer_tokens: Tensor, unpatched: float | Tensor, donor: float | Tensor) -> Metric:
    """Seed 000's normalised patching metric: 0 = unpatched logit diff, 1 = the donor's logit diff."""
    unpatched, donor = float(unpatched), float(donor)
    if unpatched == donor:
        raise ValueError(f"the unpatched and donor logit diffs are equal ({unpatched}); nothing to normalise by")
    return Metric(lambda logits: normalised(logit_diff(logits, answer_tokens), unpatched, donor), "normalised_logit_diff", final_position_only=True)


def answer_prob_metric(answer: int | Tensor) -> Metric:
    """Mean probability of the answer over prompts."""
    return Metric(lambda logits: answer_prob(logits, answer).mean(-1), "answer_prob", final_position_only=True)


def answer_rank_metric(answer: int | Tensor) -> Metric:
    """Mean rank of the answer over prompts (a float, so that sweeps can store it)."""
    return Metric(lambda logits: answer_rank(logits, answer).float().mean(-1), "answer_rank", final_position_only=True)
