"""Token batches from text, and neuron activations read through the model's hooks."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from lib.errors import HookNameError


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


@torch.no_grad()
def neuron_acts(model, tokens: Int[Tensor, "batch pos"], layers: Sequence[int],
                batch_size: int = 256) -> Float[Tensor, "batch pos layer d_mlp"]:
    """MLP neuron activations (`blocks.L.mlp.hook_post`) of every layer in `layers`, on the CPU (the
    probes and graphs that read them are fitted there)."""
    names = [get_act_name("post", layer) for layer in layers]
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise HookNameError(f"the model has no hook {missing[0]!r}; layers run from 0 to {model.cfg.n_layers - 1}")
    out = []
    for t in tokens.split(batch_size):
        _, cache = model.run_with_cache(t.to(model.cfg.device), names_filter=lambda n: n in names)
        out.append(torch.stack([cache[n].float().cpu() for n in names], dim=2))
    return torch.cat(out)
