"""Interventions as fwd_hooks for `model.run_with_hooks` (lists of (hook name, hook function)): zero and
mean ablation, splicing a module (an SAE) into the forward pass, and ablating chosen SAE features."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from lib.errors import SAEError

FwdHooks = list[tuple[str, Callable]]


def zero_hooks(hook_name: str) -> FwdHooks:
    """Zero-ablate the activation at hook_name."""
    return [(hook_name, lambda act, hook=None: torch.zeros_like(act))]


def mean_hooks(hook_name: str, mean: Float[Tensor, " d"]) -> FwdHooks:
    """Replace the activation at hook_name by `mean` at every position."""
    return [(hook_name, lambda act, hook=None: mean.to(act.device, act.dtype).expand_as(act).clone())]


def splice_hooks(hook_name: str, module) -> FwdHooks:
    """Replace the activation at hook_name by module(activation), computed in float32; `module` is an SAE
    or anything with `d_in` that maps d_in to d_in (gradients flow through it)."""

    def splice(act: Float[Tensor, "... d_in"], hook=None) -> Float[Tensor, "... d_in"]:
        if act.shape[-1] != module.d_in:
            raise SAEError(f"the SAE reads d_in={module.d_in} but {hook_name} has width {act.shape[-1]}")
        return module(act.float()).to(act.dtype)

    return [(hook_name, splice)]


def feature_ablation_hooks(saes: dict[str, object], features: dict[str, Sequence[int]]) -> FwdHooks:
    """Zero-ablate the given SAE features at each hook: subtract their decoded contribution from the
    activation (the reconstruction error stays, so with no features the model is unchanged)."""
    hooks = []
    for name, feats in features.items():
        if not len(feats):
            continue
        sae = saes[name]
        idx = torch.tensor(list(feats), device=sae.W_dec.device)

        def ablate(act: Float[Tensor, "batch pos d"], hook=None, sae=sae, idx=idx) -> Float[Tensor, "batch pos d"]:
            x = act.float().to(sae.W_dec.device)
            z = sae.encode(x)[..., idx]
            return (x - z @ sae.W_dec[idx]).to(act.device, act.dtype)

        hooks.append((name, ablate))
    return hooks
