"""Head scores (previous-token, duplicate-token, induction) for every head, and Q-, K-, V-composition
scores between heads.

Head scores follow `transformer_lens.head_detector`: a detection pattern [dest, src] marks where a head of
the kind attends; "mul" scores the share of a head's attention that lands there, "abs" is one minus the
mean absolute difference between the pattern and the head's attention (times the sequence length).
Scores are computed for every head from one forward pass and averaged over prompts.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from lib.activations import capture
from lib.prompts import Prompts, to_tokens

Kind = Literal["previous_token", "duplicate_token", "induction"]
KINDS: tuple[Kind, ...] = ("previous_token", "duplicate_token", "induction")


# ---------------------------------------------------------------------------------------------
# Detection patterns



def parse_head(head: str | Sequence[int]) -> tuple[int, int]:
    """'10.4' (layer.head, as the papers write it) or (10, 4) -> (10, 4)."""
    if isinstance(head, str):
        layer, _, index = head.partition(".")
        return int(layer), int(index)
    layer, index = head
    return int(layer), int(index)


def head_name(layer: int, head: int) -> str:
    """(10, 4) -> '10.4'."""
    return f"{layer}.{head}"


def previous_token_pattern(tokens: Int[Tensor, " pos"]) -> Float[Tensor, "dest src"]:
    """1 where dest attends to dest - 1."""
    n = tokens.shape[-1]
    return torch.diag(torch.ones(n - 1), -1)


def duplicate_token_pattern(tokens: Int[Tensor, " pos"]) -> Float[Tensor, "dest src"]:
    """1 where an earlier position holds the same token as dest."""
    same = (tokens[:, None] == tokens[None, :]).float()
    return torch.tril(same, -1)


def induction_pattern(tokens: Int[Tensor, " pos"]) -> Float[Tensor, "dest src"]:
    """1 where src follows an earlier occurrence of dest's token (the token an induction head copies)."""
    dup = duplicate_token_pattern(tokens)
    out = torch.zeros_like(dup)
    out[:, 1:] = dup[:, :-1]
    return torch.tril(out)


PATTERNS = {"previous_token": previous_token_pattern, "duplicate_token": duplicate_token_pattern, "induction": induction_pattern}


def detection_pattern(tokens: Int[Tensor, " pos"], kind: Kind) -> Float[Tensor, "dest src"]:
    if kind not in PATTERNS:
        raise ValueError(f"unknown head kind {kind!r}; one of {', '.join(KINDS)}")
    return PATTERNS[kind](tokens)


# ---------------------------------------------------------------------------------------------
# Scores


def attention_patterns(model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer batch head dest src"]:
    names = [get_act_name("pattern", layer) for layer in range(model.cfg.n_layers)]
    acts = capture(model, tokens, names)
    return torch.stack([acts[n] for n in names])


def pattern_scores(
    patterns: Float[Tensor, "layer batch head dest src"],
    detection: Float[Tensor, "batch dest src"],
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: Literal["mul", "abs"] = "mul",
) -> Float[Tensor, "layer head"]:
    """How well each head's attention matches the detection pattern, averaged over prompts."""
    patterns = patterns.float()
    d = detection[None, :, None].to(patterns)
    n = patterns.shape[-1]
    keep = torch.ones(n, n, device=patterns.device)
    if exclude_bos:
        keep[:, 0] = 0
    if exclude_current_token:
        keep.fill_diagonal_(0)
    if error_measure == "mul":
        p = patterns * keep
        scores = (p * d).sum((-2, -1)) / p.sum((-2, -1))
    elif error_measure == "abs":
        diff = (patterns - d).abs() * keep
        scores = 1 - diff.mean((-2, -1)) * n
    else:
        raise ValueError(f"error_measure must be 'mul' or 'abs', not {error_measure!r}")
    return scores.mean(1)


def head_scores(
    model,
    prompts: Prompts,
    kind: Kind,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: Literal["mul", "abs"] = "mul",
) -> Float[Tensor, "layer head"]:
    """Score of every head as a head of `kind` on `prompts` (strings of one token length, or tokens)."""
    tokens = to_tokens(model, prompts)
    detection = torch.stack([detection_pattern(t, kind) for t in tokens])
    return pattern_scores(
        attention_patterns(model, tokens), detection,
        exclude_bos=exclude_bos, exclude_current_token=exclude_current_token, error_measure=error_measure,
    )


def all_head_scores(model, prompts: Prompts, **kw) -> dict[str, Float[Tensor, "layer head"]]:
    """Previous-token, duplicate-token and induction scores of every head, from one forward pass."""
    tokens = to_tokens(model, prompts)
    patterns = attention_patterns(model, tokens)
    return {
        kind: pattern_scores(patterns, torch.stack([detection_pattern(t, kind) for t in tokens]), **kw)
        for kind in KINDS
    }


def induction_scores(model, prompts: Prompts, **kw) -> Float[Tensor, "layer head"]:
    return head_scores(model, prompts, "induction", **kw)


def induction_stripe(patterns: Float[Tensor, "... dest src"], half: int) -> Float[Tensor, ...]:
    """Olsson et al.'s induction score on a sequence ending in r + r (r of length `half`): the mean
    attention from each token of the second copy to the token after that token's first occurrence."""
    n = patterns.shape[-1]
    dest = torch.arange(n - half, n, device=patterns.device)
    return patterns[..., dest, dest - half + 1].mean(-1)


def induction_stripe_scores(model, tokens: Int[Tensor, "batch pos"], half: int) -> Float[Tensor, "layer head"]:
    """Every head's induction stripe (`induction_stripe`), averaged over the sequences of `tokens`."""
    return induction_stripe(attention_patterns(model, tokens), half).mean(1)


# ---------------------------------------------------------------------------------------------
# Composition


def _weights(model) -> dict[str, Tensor]:
    n_heads = model.cfg.n_heads
    w = {k: getattr(model, k).detach().float() for k in ("W_Q", "W_K", "W_V", "W_O")}
    for k in ("W_K", "W_V"):
        if w[k].shape[1] != n_heads:  # grouped-query attention: one K/V head serves several Q heads
            w[k] = w[k].repeat_interleave(n_heads // w[k].shape[1], dim=1)
    return w


def _frob2(U: Tensor, M: Tensor, V: Tensor) -> Tensor:
    """||U M V^T||_F^2 from small factors: tr(U^T U M V^T V M^T)."""
    return ((U.transpose(-2, -1) @ U) @ M @ (V.transpose(-2, -1) @ V) * M).sum((-2, -1))


def composition_scores(model, mode: Literal["Q", "K", "V"]) -> Float[Tensor, "layer head layer head"]:
    """||OV_A X_B||_F / (||OV_A||_F ||X_B||_F) for every earlier head A and later head B, where X is
    W_Q W_K^T (Q), its transpose (K) or W_V W_O (V); zero where A is not in an earlier layer."""
    if mode not in ("Q", "K", "V"):
        raise ValueError(f"mode must be 'Q', 'K' or 'V', not {mode!r}")
    w = _weights(model)
    L, H = w["W_Q"].shape[:2]
    W_V, W_O = w["W_V"], w["W_O"]  # [L, H, d, dh], [L, H, dh, d]
    if mode == "Q":
        R_in, R_out = w["W_Q"], w["W_K"]  # X_B = R_in R_out^T
    elif mode == "K":
        R_in, R_out = w["W_K"], w["W_Q"]
    else:
        R_in, R_out = W_V, W_O.transpose(-2, -1)
    eye = torch.eye(W_V.shape[-1], device=W_V.device)
    ov_norm2 = _frob2(W_V, eye, W_O.transpose(-2, -1))  # [L, H]
    x_norm2 = _frob2(R_in, eye, R_out)  # [L, H]
    scores = torch.zeros(L, H, L, H, device=W_V.device)
    for la in range(L - 1):
        # M[a, lb, b] = W_O^A R_in^B : [H, L', H, dh, dh] for the later layers only
        M = torch.einsum("aed,lbdf->albef", W_O[la], R_in[la + 1 :])
        comp2 = _frob2(W_V[la][:, None, None], M, R_out[la + 1 :][None])
        scores[la, :, la + 1 :] = (comp2 / ov_norm2[la][:, None, None] / x_norm2[la + 1 :][None]).sqrt()
    return scores


def composition_baseline(model, mode: Literal["Q", "K", "V"], n: int = 200, seed: int = 0) -> Float[Tensor, " n"]:
    """Composition scores of random Gaussian weights of the model's shapes: what chance alone gives."""
    g = torch.Generator().manual_seed(seed)
    d, dh = model.cfg.d_model, model.cfg.d_head

    def rand(*shape):
        return torch.randn(n, *shape, generator=g)

    W_V, W_O = rand(d, dh), rand(dh, d)
    R_in, R_out = rand(d, dh), rand(d, dh)
    M = W_O @ R_in
    eye = torch.eye(dh).expand(n, dh, dh)
    num = _frob2(W_V, M, R_out)
    return (num / _frob2(W_V, eye, W_O.transpose(-2, -1)) / _frob2(R_in, eye, R_out)).sqrt()
