"""Token batches from text, and neuron activations read through the model's hooks."""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from lib.errors import HookNameError, HookNotFired


def text_tokens(model, texts: Sequence[str], n_ctx: int | None = None, *, bos_in_mask: bool = False
                ) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """`<bos> text <eos>` per row, right-padded (no real token attends to padding), and the mask of
    real tokens. BOS is left out of the mask unless `bos_in_mask` (its activations say nothing about the
    text, but an SAE spliced in at every position must also reconstruct them)."""
    tok = model.tokenizer
    n_ctx = n_ctx or model.cfg.n_ctx
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    eos = tok.eos_token_id
    rows = [[bos, *tok(t, add_special_tokens=False)["input_ids"], *([eos] if eos is not None else [])][:n_ctx]
            for t in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    tokens = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
        mask[i, 0 if bos_in_mask else 1 : len(r)] = True
    return tokens, mask


class _Captured(Exception):
    """Raised inside a forward pass once every activation asked for has been captured."""


@torch.no_grad()
def capture(model, tokens: Int[Tensor, "batch pos"], names: Sequence[str], fwd_hooks: Sequence = ()) -> dict[str, Tensor]:
    """The activations at the hooks `names` on one batch, from a forward pass (with `fwd_hooks` applied
    first) that stops once the last of them has fired: what comes after (the later blocks, the unembedding
    over the whole vocabulary) is never computed, and no logits are held."""
    names = list(dict.fromkeys(names))
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise HookNameError(f"the model has no hook {missing[0]!r}; layers run from 0 to {model.cfg.n_layers - 1}")
    got: dict[str, Tensor] = {}

    def keep(act, hook=None, name=""):
        got.setdefault(name, act.detach().clone())  # later in-place operations must not reach it
        if len(got) == len(names):
            raise _Captured
        return act

    hooks = [(n, functools.partial(keep, name=n)) for n in names]
    try:
        model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=[*fwd_hooks, *hooks])
    except _Captured:
        pass
    if len(got) != len(names):
        raise HookNotFired(f"the hooks {[n for n in names if n not in got]} never fired in a forward pass")
    return got


@torch.no_grad()
def masked_acts(model, tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"], names: Sequence[str],
                batch_size: int = 200) -> dict[str, Float[Tensor, "n d"]]:
    """Per hook of `names`: its activations at every position of `mask`, stacked as rows (row-major), from
    one stopped forward pass per batch for all the hooks."""
    rows: dict[str, list[Tensor | None]] = {n: [None] * len(tokens) for n in names}
    for idx, width in length_batches(mask, batch_size):
        m = mask[idx, :width]
        for name, act in capture(model, tokens[idx, :width], names).items():
            for i, a, keep in zip(idx.tolist(), act, m.to(act.device)):
                rows[name][i] = a[keep].float()
    return {n: torch.cat(v) for n, v in rows.items()}


def length_batches(mask: Bool[Tensor, "batch pos"], batch_size: int) -> list[tuple[Int[Tensor, " rows"], int]]:
    """Rows of right-padded text in batches of similar length, shortest first, each with the width that holds
    its longest row: a causal model's outputs at the real tokens do not depend on the padding after them, so
    the columns past it need not be computed."""
    lengths = mask.flip(1).int().argmax(1).neg() + mask.shape[1]  # one past each row's last real token
    lengths = torch.where(mask.any(1), lengths, torch.ones_like(lengths))
    order = lengths.argsort(stable=True)
    return [(idx, int(lengths[idx].max())) for idx in order.split(batch_size)]


@torch.no_grad()
def neuron_acts(model, tokens: Int[Tensor, "batch pos"], layers: Sequence[int],
                batch_size: int = 256) -> Float[Tensor, "batch pos layer d_mlp"]:
    """MLP neuron activations (`blocks.L.mlp.hook_post`) of every layer in `layers`, on the CPU (the
    probes and graphs that read them are fitted there)."""
    names = [get_act_name("post", layer) for layer in layers]
    out = []
    for t in tokens.split(batch_size):
        acts = capture(model, t, names)
        out.append(torch.stack([acts[n].float().cpu() for n in names], dim=2))
    return torch.cat(out)
