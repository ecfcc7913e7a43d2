"""Sequences that reward copying from context: random tokens repeated once ([BOS] + r + r, the induction
probe) and a segment of distinct random items repeated to a length (every item after the first copy is
predictable by looking up what followed it last time)."""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

import torch
from jaxtyping import Int
from torch import Tensor

Item = TypeVar("Item")


def ordinary_tokens(model) -> Int[Tensor, " vocab"]:
    """Every token id that is not a special token."""
    special = set(getattr(model.tokenizer, "all_special_ids", []) or [])
    return torch.tensor([i for i in range(model.cfg.d_vocab) if i not in special])


def with_bos(model, tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """`tokens` with BOS in front where the model prepends one."""
    if model.cfg.default_prepend_bos and model.tokenizer.bos_token_id is not None:
        return torch.cat([torch.full((len(tokens), 1), model.tokenizer.bos_token_id), tokens], 1)
    return tokens


def repeated_random(vocab: Int[Tensor, " vocab"], half: int, batch: int, seed: int) -> Int[Tensor, "batch 2*half"]:
    """r + r for `batch` random sequences r of `half` tokens drawn from `vocab`."""
    g = torch.Generator().manual_seed(seed)
    r = vocab[torch.randint(len(vocab), (batch, half), generator=g)]
    return torch.cat([r, r], dim=1)


def repeated_random_tokens(model, half: int, batch: int = 1, seed: int = 0) -> Int[Tensor, "batch pos"]:
    """Random ordinary tokens repeated once ([BOS] + r + r, r of length `half`): the standard probe for
    induction heads."""
    return with_bos(model, repeated_random(ordinary_tokens(model), half, batch, seed))


def repeated_segment(rng: random.Random, items: Sequence[Item], length: int, shortest: int, longest: int) -> list[Item]:
    """A segment of `shortest`..`longest` distinct random items, repeated until `length` items are filled.

    Within a segment every item occurs once, so "copy some item seen earlier" guesses right only
    1/len(segment) of the time; the successor of the current item's earlier copy (an induction lookup) is
    always right from the second copy on. The first copy is unpredictable.
    """
    k = rng.randint(shortest, longest)
    segment = rng.sample(list(items), k)
    out: list[Item] = []
    while len(out) < length:
        out += segment
    return out[:length]
