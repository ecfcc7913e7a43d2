"""Parameter divergence between a base checkpoint and its tuned twin, block by block."""
from __future__ import annotations

import re

import torch
from jaxtyping import Float
from torch import Tensor

from lib.errors import ShapeMismatch

_BLOCK = re.compile(r"\.(?:h|layers|blocks|layer)\.(\d+)\.")


def block_of(param_name: str) -> int | None:
    """The transformer block a Hugging Face parameter belongs to (None: embeddings, final norm, head)."""
    m = _BLOCK.search(f".{param_name}")
    return int(m.group(1)) if m else None


def _params(model) -> dict[str, Tensor]:
    """Every parameter the model holds, once. A TransformerBridge also exposes views of some of them (the
    q, k and v slices of GPT-2's joint qkv weight), which would count their change twice: of parameters
    sharing storage only the largest is kept."""
    hf = getattr(model, "original_model", model)
    by_storage: dict[int, tuple[str, Tensor]] = {}
    for name, p in hf.named_parameters():
        key = p.untyped_storage().data_ptr()
        if key not in by_storage or p.numel() > by_storage[key][1].numel():
            by_storage[key] = (name, p)
    return dict(sorted(by_storage.values()))


def param_diffs(base, tuned) -> dict[str, Tensor]:
    """tuned - base for every parameter (the two must share names and shapes)."""
    a, b = _params(base), _params(tuned)
    if a.keys() != b.keys():
        raise ShapeMismatch(f"base and tuned parameters differ in names: {sorted(a.keys() ^ b.keys())[:6]}")
    out = {}
    for name, p in a.items():
        if p.shape != b[name].shape:
            raise ShapeMismatch(f"parameter {name}: base {tuple(p.shape)} vs tuned {tuple(b[name].shape)}")
        out[name] = (b[name].detach() - p.detach()).float()
    return out


def block_divergence(base, tuned, n_layers: int | None = None) -> dict[str, Float[Tensor, " layer"]]:
    """Per block: the L2 norm of the parameter change, the same relative to the base's norm, and the max
    absolute change (0 exactly where the block was frozen)."""
    n_layers = n_layers or base.cfg.n_layers
    sq, ref, mx = torch.zeros(n_layers), torch.zeros(n_layers), torch.zeros(n_layers)
    base_params = _params(base)
    for name, d in param_diffs(base, tuned).items():
        layer = block_of(name)
        if layer is None:
            continue
        sq[layer] += d.pow(2).sum()
        ref[layer] += base_params[name].detach().float().pow(2).sum()
        mx[layer] = torch.maximum(mx[layer], d.abs().max())
    return {"l2": sq.sqrt(), "relative_l2": sq.sqrt() / ref.sqrt(), "max_abs": mx}

