"""Logit lens, direct logit attribution and attribution patching.

Direct logit attribution reads a vector in the residual stream through the final LayerNorm, with the scale
taken from the cache (so the map is linear), and through the unembedding:
    contribution(x) = ((x - mean(x)) / scale) * w_ln  .  (W_U[:, a] - W_U[:, b])
Every component's contribution plus the constant (b_ln . direction + b_U[a] - b_U[b]) is the logit diff,
whether or not LayerNorm was folded at load time.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from lib.errors import HookNotFired
from lib.patching import (
    Donor,
    attn_out_sweep,
    check_hook_names,
    donor_activation,
    head_out_by_pos_sweep,
    head_out_sweep,
    mlp_out_sweep,
    resid_pre_sweep,
    run_patches,
)

MetricFn = Callable[[Tensor], Tensor]


# ---------------------------------------------------------------------------------------------
# The readout: final LayerNorm (cached scale) and unembedding


def attribution_names(model) -> Callable[[str], bool]:
    """names_filter for a cache that the functions of this module can read."""
    ends = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "attn.hook_z")
    return lambda n: n.endswith(ends) or n in ("hook_embed", "hook_pos_embed", "ln_final.hook_scale")


def run_for_attribution(model, tokens: Tensor):
    """Logits and a cache holding what logit lens and attribution read."""
    with torch.no_grad():
        return model.run_with_cache(tokens, names_filter=attribution_names(model))


def _ln_params(model) -> tuple[Tensor | None, Tensor | None, bool]:
    ln = model.ln_final
    module = getattr(ln, "original_component", ln)
    w = getattr(module, "weight", None)
    b = getattr(module, "bias", None)
    if w is not None and getattr(ln, "uses_weight_offset", False):
        w = 1.0 + w
    rms = bool(getattr(ln, "uses_rms_norm", model.cfg.normalization_type in ("RMS", "RMSPre")))
    return (None if w is None else w.detach()), (None if b is None or rms else b.detach()), not rms


def _unembed(model) -> tuple[Float[Tensor, "d_model d_vocab"], Float[Tensor, " d_vocab"]]:
    W_U = model.W_U.detach()
    try:
        b_U = model.b_U.detach()
    except AttributeError:
        b_U = torch.zeros(W_U.shape[-1], dtype=W_U.dtype)
    return W_U, b_U


def _pairs(answer_tokens: Tensor, batch: int) -> Int[Tensor, "batch 2"]:
    answer_tokens = torch.as_tensor(answer_tokens)
    return answer_tokens.expand(batch, 2) if answer_tokens.ndim == 1 else answer_tokens


def logit_diff_directions(model, answer_tokens: Int[Tensor, "batch 2"]) -> Float[Tensor, "batch d_model"]:
    """W_U[:, correct] - W_U[:, wrong], one direction per prompt."""
    W_U, _ = _unembed(model)
    answer_tokens = torch.as_tensor(answer_tokens).reshape(-1, 2)
    return W_U[:, answer_tokens[:, 0]].T - W_U[:, answer_tokens[:, 1]].T


def scale_stack(
    model, cache, stack: Float[Tensor, "... batch d_model"], pos: int = -1
) -> Float[Tensor, "... batch d_model"]:
    """Components through the final LayerNorm with the cached scale (centred, divided by scale, times w)."""
    w, _, center = _ln_params(model)
    if center:
        stack = stack - stack.mean(-1, keepdim=True)
    stack = stack / cache["ln_final.hook_scale"][:, pos]
    return stack * w if w is not None else stack


def project_logit_diff(
    model, cache, stack: Float[Tensor, "... batch d_model"], answer_tokens: Tensor, pos: int = -1
) -> Float[Tensor, "... batch"]:
    """Each component's contribution to each prompt's logit diff."""
    batch = stack.shape[-2]
    directions = logit_diff_directions(model, _pairs(answer_tokens, batch))
    return (scale_stack(model, cache, stack, pos) * directions).sum(-1)


def readout_bias(model, answer_tokens: Tensor, batch: int = 1) -> Float[Tensor, " batch"]:
    """The part of the logit diff that no component writes: b_ln . direction + b_U[correct] - b_U[wrong]."""
    pairs = _pairs(answer_tokens, batch)
    _, b, _ = _ln_params(model)
    _, b_U = _unembed(model)
    out = b_U[pairs[:, 0]] - b_U[pairs[:, 1]]
    if b is not None:
        out = out + logit_diff_directions(model, pairs) @ b
    return out


# ---------------------------------------------------------------------------------------------
# Logit lens and decomposition


def accumulated_resid(model, cache, pos: int = -1, incl_mid: bool = False) -> tuple[Float[Tensor, "point batch d_model"], list[str]]:
    """The residual stream entering each block (and mid-block), then the final one."""
    n_layers = model.cfg.n_layers
    stack, labels = [], []
    for layer in range(n_layers):
        stack.append(cache[f"blocks.{layer}.hook_resid_pre"][:, pos])
        labels.append(f"{layer}_pre")
        mid = f"blocks.{layer}.hook_resid_mid"
        if incl_mid and mid in cache:
            stack.append(cache[mid][:, pos])
            labels.append(f"{layer}_mid")
    stack.append(cache[f"blocks.{n_layers - 1}.hook_resid_post"][:, pos])
    labels.append("final_post")
    return torch.stack(stack), labels


def logit_lens(
    model, cache, answer_tokens: Tensor, pos: int = -1, incl_mid: bool = False, per_prompt: bool = False
) -> tuple[Float[Tensor, " point"], list[str]]:
    """Logit diff read off the accumulated residual stream at each layer, scaled by the final LayerNorm
    scale from the cache (seed 000); the constant readout bias is left out, as there."""
    stack, labels = accumulated_resid(model, cache, pos, incl_mid)
    values = project_logit_diff(model, cache, stack, answer_tokens, pos)
    return (values if per_prompt else values.mean(-1)), labels


@torch.no_grad()
def fresh_logit_lens(
    model, cache, answer_tokens: Tensor, pos: int = -1, per_prompt: bool = False
) -> tuple[Float[Tensor, " point"], list[str]]:
    """Logit diff of the accumulated residual stream at each layer read through the model's own final
    LayerNorm (a fresh scale per point) and unembedding: equal residual streams give equal values, also
    between two models whose final scales differ."""
    stack, labels = accumulated_resid(model, cache, pos)
    logits = model.unembed(model.ln_final(stack))  # point batch d_vocab
    pairs = torch.as_tensor(answer_tokens).reshape(-1, 2).to(logits.device)
    index = pairs.expand(stack.shape[0], stack.shape[1], 2)
    answers = logits.gather(-1, index)
    values = answers[..., 0] - answers[..., 1]
    return (values if per_prompt else values.mean(-1)), labels


def decompose_resid(model, cache, pos: int = -1) -> tuple[Float[Tensor, "component batch d_model"], list[str]]:
    """The final residual stream as embeddings + each attention output + each MLP output."""
    n_layers = model.cfg.n_layers
    first = cache["blocks.0.hook_resid_pre"][:, pos]
    parts, labels = [], []
    if "hook_pos_embed" in cache:
        pos_embed = cache["hook_pos_embed"][:, pos]
        parts += [first - pos_embed, pos_embed]
        labels += ["embed", "pos_embed"]
    else:
        parts.append(first)
        labels.append("embed")
    for layer in range(n_layers):
        parts += [cache[get_act_name("attn_out", layer)][:, pos], cache[get_act_name("mlp_out", layer)][:, pos]]
        labels += [f"{layer}_attn_out", f"{layer}_mlp_out"]
    stack = torch.stack(parts)
    rest = cache[f"blocks.{n_layers - 1}.hook_resid_post"][:, pos] - stack.sum(0)
    if rest.abs().max() > 1e-4 * max(1.0, float(stack.abs().max())):
        stack = torch.cat([stack, rest[None]])
        labels.append("unattributed")
    return stack, labels


def component_logit_diffs(
    model, cache, answer_tokens: Tensor, pos: int = -1, per_prompt: bool = False
) -> tuple[Float[Tensor, " component"], list[str]]:
    """Direct contribution of each component to the logit diff, with the readout bias last: they sum to
    the model's logit diff."""
    stack, labels = decompose_resid(model, cache, pos)
    values = project_logit_diff(model, cache, stack, answer_tokens, pos)
    values = torch.cat([values, readout_bias(model, answer_tokens, values.shape[-1])[None]])
    return (values if per_prompt else values.mean(-1)), labels + ["bias"]


def layer_logit_diffs(model, cache, answer_tokens: Tensor, pos: int = -1) -> dict[str, Float[Tensor, " layer"]]:
    """Per-layer attention and MLP contributions to the (mean) logit diff."""
    values, labels = component_logit_diffs(model, cache, answer_tokens, pos)
    by = dict(zip(labels, values))
    n_layers = model.cfg.n_layers
    return {
        "attn": torch.stack([by[f"{l}_attn_out"] for l in range(n_layers)]),
        "mlp": torch.stack([by[f"{l}_mlp_out"] for l in range(n_layers)]),
    }


def head_results(model, cache, pos: int = -1) -> Float[Tensor, "layer head batch d_model"]:
    """What each head writes into the residual stream at `pos` (hook_z through W_O, without b_O)."""
    z = torch.stack([cache[get_act_name("z", l)][:, pos] for l in range(model.cfg.n_layers)])  # layer batch head d_head
    return torch.einsum("lbhd,lhdm->lhbm", z, model.W_O.detach())


def head_logit_diffs(
    model, cache, answer_tokens: Tensor, pos: int = -1, per_prompt: bool = False
) -> Float[Tensor, "layer head"]:
    """Direct logit attribution of every head to the logit diff."""
    values = project_logit_diff(model, cache, head_results(model, cache, pos), answer_tokens, pos)
    return values if per_prompt else values.mean(-1)


# ---------------------------------------------------------------------------------------------
# Attribution patching


FIELDS = {
    "resid_pre": ("layer", "pos"),
    "attn_out": ("layer", "pos"),
    "mlp_out": ("layer", "pos"),
    "z": ("layer", "pos", "head"),
    "z_all_pos": ("layer", "head"),
}


def _act_and_grad(model, tokens: Tensor, names: list[str], metric: MetricFn) -> tuple[Tensor, dict, dict]:
    """One forward and one backward pass: the metric, and each named activation with its gradient."""
    acts: dict[str, Tensor] = {}
    hooks = []
    for name in names:
        def fn(act, hook, _name=name):
            acts[_name] = act
            return act
        hooks.append((name, fn))
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(tokens)
        value = torch.as_tensor(metric(logits))
    missing = [n for n in names if n not in acts]
    if missing:
        raise HookNotFired(f"hook(s) {', '.join(missing)} never ran in the forward pass")
    grads = torch.autograd.grad(value.reshape(()), [acts[n] for n in names], allow_unused=True)
    return value.detach(), {n: a.detach() for n, a in acts.items()}, {
        n: (torch.zeros_like(acts[n]) if g is None else g.detach()) for n, g in zip(names, grads)
    }


def attribution_patch(
    model, corrupted_tokens: Tensor, clean_cache: Donor, metric: MetricFn, fields: Sequence[str] = tuple(FIELDS)
) -> dict[str, Tensor]:
    """Linear estimate of every patch of the exact sweeps at once: metric(corrupted) +
    (clean - corrupted) . d metric / d activation, in the layout of the matching exact sweep
    (resid_pre, attn_out, mlp_out: [layer, pos]; z: [layer, pos, head]; z_all_pos: [layer, head])."""
    n_layers = model.cfg.n_layers
    base = {"z_all_pos": "z"}
    names = sorted({get_act_name(base.get(f, f), l) for f in fields for l in range(n_layers)})
    check_hook_names(model, names)
    value, acts, grads = _act_and_grad(model, corrupted_tokens, names, metric)
    out = {}
    for field in fields:
        per_layer = []
        for layer in range(n_layers):
            name = get_act_name(base.get(field, field), layer)
            delta = (donor_activation(clean_cache, name) - acts[name]) * grads[name]
            if field == "z":
                per_layer.append(delta.sum((0, -1)))  # pos head
            elif field == "z_all_pos":
                per_layer.append(delta.sum((0, 1, -1)))  # head
            else:
                per_layer.append(delta.sum((0, -1)))  # pos
        out[field] = value + torch.stack(per_layer)
    return out


def correlation(estimate: Tensor, exact: Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation of an estimate with the exact values, over all cells."""
    from scipy import stats

    x, y = estimate.flatten().double(), exact.flatten().double()
    if x.std() == 0 or y.std() == 0:
        return {"pearson": float("nan"), "spearman": float("nan")}
    return {
        "pearson": float(torch.corrcoef(torch.stack([x, y]))[0, 1]),
        "spearman": float(stats.spearmanr(x.numpy(), y.numpy()).statistic),
    }


@dataclass
class Confirmed:
    """Attribution patching as a pre-filter: the estimate everywhere, the exact value on the top cells."""

    field: str
    estimate: Tensor  # every cell
    cells: list[tuple[int, ...]]  # the cells confirmed, largest estimated effect first
    exact: Tensor  # exact patched metric on `cells`
    unpatched: float
    correlation: dict[str, float]  # estimate vs exact on `cells`


_SWEEP_PATCH = {
    "resid_pre": lambda cell: [(get_act_name("resid_pre", cell[0]), (slice(None), cell[1]))],
    "attn_out": lambda cell: [(get_act_name("attn_out", cell[0]), (slice(None), cell[1]))],
    "mlp_out": lambda cell: [(get_act_name("mlp_out", cell[0]), (slice(None), cell[1]))],
    "z": lambda cell: [(get_act_name("z", cell[0]), (slice(None), cell[1], cell[2]))],
    "z_all_pos": lambda cell: [(get_act_name("z", cell[0]), (slice(None), slice(None), cell[1]))],
}


def attribute_then_confirm(
    model, corrupted_tokens: Tensor, clean_cache: Donor, metric: MetricFn, field: str = "z", top_k: int = 20
) -> Confirmed:
    """Estimate every cell by attribution patching, then patch the `top_k` largest estimated effects exactly."""
    estimate = attribution_patch(model, corrupted_tokens, clean_cache, metric, [field])[field]
    with torch.no_grad():
        unpatched = float(torch.as_tensor(metric(model(corrupted_tokens))))
    order = (estimate - unpatched).abs().flatten().argsort(descending=True)[:top_k]
    cells = [tuple(int(i) for i in torch.unravel_index(k, estimate.shape)) for k in order]
    exact = run_patches(model, corrupted_tokens, clean_cache, [_SWEEP_PATCH[field](c) for c in cells], metric)
    picked = estimate.flatten()[order]
    return Confirmed(field, estimate, cells, exact, unpatched, correlation(picked, exact))


EXACT = {
    "resid_pre": resid_pre_sweep,
    "attn_out": attn_out_sweep,
    "mlp_out": mlp_out_sweep,
    "z": head_out_by_pos_sweep,
    "z_all_pos": head_out_sweep,
}


def attribution_report(
    model, corrupted_tokens: Tensor, clean_cache: Donor, metric: MetricFn, fields: Sequence[str] = tuple(FIELDS)
) -> dict[str, dict]:
    """Attribution patching against exact patching on every cell of each field: both grids and their
    Pearson and Spearman correlation."""
    estimates = attribution_patch(model, corrupted_tokens, clean_cache, metric, fields)
    report = {}
    for field in fields:
        exact = EXACT[field](model, corrupted_tokens, clean_cache, metric)
        report[field] = {"estimate": estimates[field], "exact": exact, **correlation(estimates[field], exact)}
    return report
