"""Causal structure of the residual stream: information flows only rightward and downward."""
from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lib.activations import capture
from lib.patching import patched_logits


@torch.no_grad()
def leftward_leak(
    model,
    donor_tokens: Int[Tensor, "1 pos"],
    tokens: Int[Tensor, "1 pos"],
    layer: int,
    pos: int,
    hook: str = "hook_resid_pre",
    base_logits: Float[Tensor, "1 pos d_vocab"] | None = None,
) -> tuple[float, float]:
    """Patch blocks.{layer}.{hook} at `pos` from the donor run into the run on `tokens`, as one full forward
    pass with a hook (the patching fast path copies the logits before `pos` by construction, so it could
    not show a leak). `base_logits`: the model's logits on `tokens`, when already computed.

    Returns (max |change in logits| at positions before `pos`, max |change| at `pos` and after).
    """
    name = f"blocks.{layer}.{hook}"
    donor_cache = capture(model, donor_tokens, [name])
    base = model(tokens) if base_logits is None else base_logits
    patched = patched_logits(model, tokens, donor_cache, [(name, (slice(None), pos))], fast=False)
    change = (patched - base).abs()
    before = change[:, :pos].max().item() if pos > 0 else 0.0
    return before, change[:, pos:].max().item()
