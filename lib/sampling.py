"""Sampled completions at a temperature, by the Gumbel-max trick.

The Gumbel noise comes from one generator seeded by `seed` and is drawn in an order fixed by the prompts
alone (prompts grouped by token length, in batches, one draw per step), never by the model's outputs:
two runs that differ only in the model, or in hooks on it, use the same random numbers for each
completion and step (paired samples).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lib.activations import capture
from lib.patching import mismatch

MAX_LOGITS = 1 << 27  # numbers in one step's logits, at most
NextLogits = Callable[[Int[Tensor, "batch pos"]], Float[Tensor, "batch d_vocab"]]


@torch.no_grad()
def sample_tokens(next_logits: NextLogits, prompts: Sequence[Sequence[int]], *, seed: int, max_new_tokens: int = 16,
                  eos: int | None = None, temperature: float = 1.0, batch_size: int = 500) -> list[list[int]]:
    """The new tokens after each prompt (token ids), cut before the first `eos`. `next_logits` maps
    tokens [batch, pos] to the logits of the next token [batch, d_vocab]."""
    if not prompts:
        raise ValueError("sampling needs at least one prompt")
    if temperature <= 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    g = torch.Generator().manual_seed(seed)
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):  # equal-length prompts share a batch: no padding needed
        by_length.setdefault(len(p), []).append(i)
    out: list[list[int]] = [[] for _ in prompts]
    for members in by_length.values():
        for b in range(0, len(members), batch_size):
            idx = members[b : b + batch_size]
            tokens = torch.tensor([list(prompts[i]) for i in idx])
            start = tokens.shape[1]
            for _ in range(max_new_tokens):
                logits = next_logits(tokens).float()
                u = torch.rand(logits.shape, generator=g).clamp_min(1e-20).to(logits.device)
                nxt = ((logits / temperature).log_softmax(-1) - torch.log(-torch.log(u))).argmax(-1)
                tokens = torch.cat([tokens, nxt[:, None].cpu()], dim=1)
            for i, row in zip(idx, tokens[:, start:].tolist()):
                out[i] = row[: row.index(eos)] if eos is not None and eos in row else row
    return out


def sample_completions(model, prompts: Sequence[str], n: int, *, seed: int, max_new_tokens: int = 16,
                       fwd_hooks: Sequence = (), temperature: float = 1.0, batch_size: int = 500) -> list[str]:
    """`n` completions of a TransformerLens-style model, completion i continuing prompts[i % len(prompts)]
    (tokenized as the model does, BOS included where it prepends one), with `fwd_hooks` applied at every
    step; decoded, without the prompt."""
    if n < 1 or not prompts:
        raise ValueError(f"sampling needs n >= 1 and at least one prompt, got n={n} and {len(prompts)} prompts")
    tokenized = {p: model.to_tokens(p, truncate=False)[0].tolist() for p in dict.fromkeys(prompts)}
    longest = max(map(len, tokenized.values()))
    if longest + max_new_tokens > model.cfg.n_ctx:
        raise ValueError(f"a prompt of {longest} tokens and {max_new_tokens} new ones exceed the model's context of "
                         f"{model.cfg.n_ctx}; shorten the prompts or sample fewer tokens")
    # where the full forward pass is the one used, every position's logits are computed: bound them (a
    # 50k-token vocabulary makes them the largest tensor)
    batch_size = max(1, min(batch_size, MAX_LOGITS // ((longest + max_new_tokens) * model.cfg.d_vocab)))
    rows = sample_tokens(
        next_token_logits(model, fwd_hooks),
        [tokenized[prompts[i % len(prompts)]] for i in range(n)],
        seed=seed, max_new_tokens=max_new_tokens, eos=model.tokenizer.eos_token_id, temperature=temperature,
        batch_size=batch_size,
    )
    return [model.tokenizer.decode(row).strip() for row in rows]



def next_token_logits(model, fwd_hooks: Sequence = ()) -> NextLogits:
    """The next-token logits of a TransformerLens-style model with `fwd_hooks` applied, by the fastest of
    three ways that reproduces the model's own forward pass: keys and values kept between steps (a step
    computes the new token alone), the last position alone unembedded, or the full forward pass. A faster
    way is checked on its first two calls against the full pass (to float rounding, `lib.patching.mismatch`)
    and dropped where it differs or fails; the full pass then serves."""
    ways = [_kv_cached(model, fwd_hooks), _last_position(model, fwd_hooks)]
    full = _full(model, fwd_hooks)
    checks = [2]

    @torch.no_grad()
    def next_logits(tokens: Tensor) -> Tensor:
        while ways and checks[0]:
            reference = full(tokens)
            try:
                got = ways[0](tokens)
                ok = not mismatch(got, reference)
            except Exception:  # this way cannot run on this model: the next one
                ok = False
            if ok:
                checks[0] -= 1
                return got
            ways.pop(0)
            checks[0] = 2
        return ways[0](tokens) if ways else full(tokens)

    return next_logits


def _full(model, fwd_hooks: Sequence) -> NextLogits:
    device = next(model.parameters()).device
    return lambda tokens: model.run_with_hooks(tokens.to(device), fwd_hooks=list(fwd_hooks))[:, -1]


def _last_position(model, fwd_hooks: Sequence) -> NextLogits:
    """The last block's resid_post at the last position, then ln_final and unembed."""
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"

    def step(tokens: Tensor) -> Tensor:
        resid = capture(model, tokens, [last], fwd_hooks)[last][:, -1:]
        return model.unembed(model.ln_final(resid))[:, -1]

    return step


def _kv_cached(model, fwd_hooks: Sequence) -> NextLogits:
    """The model's own key-value cache: a call whose tokens extend the previous call's by one computes that
    token alone."""
    device = next(model.parameters()).device
    state: dict = {}

    def step(tokens: Tensor) -> Tensor:
        tokens, prev = tokens.to(device), state.get("tokens")
        with model.hooks(fwd_hooks=list(fwd_hooks)), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the cache's argument name is changing
            if prev is not None and tokens.shape == (prev.shape[0], prev.shape[1] + 1) and torch.equal(tokens[:, :-1], prev):
                logits, past = model(tokens[:, -1:], return_type="logits_and_cache", past_key_values=state["past"])
            else:
                logits, past = model(tokens, return_type="logits_and_cache", use_cache=True)
        state.update(tokens=tokens, past=past)
        return logits[:, -1]

    return step
