"""Causal structure of the residual stream: information flows only rightward and downward."""
from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

from lib.patching import patched_logits


@torch.no_grad()
def leftward_leak(
    model,
    donor_tokens: Int[Tensor, "1 pos"],
    tokens: Int[Tensor, "1 pos"],
    layer: int,
    pos: int,
    hook: str = "hook_resid_pre",
) -> tuple[float, float]:
    """Patch blocks.{layer}.{hook} at `pos` from the donor run into the run on `tokens`.

    Returns (max |change in logits| at positions before `pos`, max |change| at `pos` and after).
    """
    _, donor_cache = model.run_with_cache(donor_tokens, names_filter=lambda n: n == f"blocks.{layer}.{hook}")
    base = model(tokens)
    patched = patched_logits(model, tokens, donor_cache, [(f"blocks.{layer}.{hook}", (slice(None), pos))])
    change = (patched - base).abs()
    before = change[:, :pos].max().item() if pos > 0 else 0.0
    return before, change[:, pos:].max().item()
