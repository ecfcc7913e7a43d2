"""A base model and its tuned twin on the same tokens: what tuning changed, and where (seed 000).

Patching goes tuned -> base: the base model runs the prompt and takes the named activations from the
tuned model's run on the same tokens; an effect is the patched base model's logit diff minus its own.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lib import attribution, metrics, patching
from lib.prompts import answer_tokens, to_tokens

Head = tuple[int, int]


def parse_component(name: str) -> str:
    """'mlp_out.10' -> '10_mlp_out' (the label of `attribution.component_logit_diffs`)."""
    kind, _, layer = name.partition(".")
    return f"{int(layer)}_{kind}"


@dataclass
class Pair:
    """Both models' runs on one prompt (or a batch of prompts), cached for attribution and patching."""

    base: object
    tuned: object
    tokens: Int[Tensor, "batch pos"]
    answers: Int[Tensor, "batch 2"]
    base_logits: Tensor
    tuned_logits: Tensor
    base_cache: object
    tuned_cache: object

    @property
    def base_logit_diff(self) -> float:
        return float(metrics.logit_diff(self.base_logits, self.answers))

    @property
    def tuned_logit_diff(self) -> float:
        return float(metrics.logit_diff(self.tuned_logits, self.answers))

    def str_tokens(self) -> list[str]:
        return self.base.to_str_tokens(self.tokens[0])


@torch.no_grad()
def run_pair(base, tuned, prompt: str | Sequence[str], answers: Sequence[str]) -> Pair:
    patching.check_same_shape(base, tuned)
    tokens = to_tokens(base, prompt)
    if not torch.equal(tokens, to_tokens(tuned, prompt)):
        raise ValueError("base and tuned tokenizers split the prompt differently; a pair needs one tokenizer")
    ans = answer_tokens(base, answers)
    base_logits, base_cache = attribution.run_for_attribution(base, tokens)
    tuned_logits, tuned_cache = attribution.run_for_attribution(tuned, tokens)
    return Pair(base, tuned, tokens, ans, base_logits, tuned_logits, base_cache, tuned_cache)


def lens_curves(pair: Pair) -> tuple[Float[Tensor, " point"], Float[Tensor, " point"], list[str]]:
    """Logit-lens logit diff per layer for base and tuned (each point through a fresh final LayerNorm)."""
    base, labels = attribution.fresh_logit_lens(pair.base, pair.base_cache, pair.answers)
    tuned, _ = attribution.fresh_logit_lens(pair.tuned, pair.tuned_cache, pair.answers)
    return base, tuned, labels


def layer_attributions(model, cache, answers) -> dict[str, float]:
    """Direct contribution of every attention and MLP output to the logit diff: {'10_mlp_out': ...}."""
    values, labels = attribution.component_logit_diffs(model, cache, answers)
    return {lab: float(v) for lab, v in zip(labels, values) if lab.endswith(("_attn_out", "_mlp_out"))}


def head_dla_diff(pair: Pair) -> Float[Tensor, "layer head"]:
    """Per-head direct logit attribution, tuned minus base, both read through the base model's readout
    (its cached final LayerNorm scale and unembedding): a head that writes the same vector in both models
    scores exactly 0, whatever tuning did to the final scale."""
    tuned = attribution.head_results(pair.tuned, pair.tuned_cache)
    base = attribution.head_results(pair.base, pair.base_cache)
    return attribution.project_logit_diff(pair.base, pair.base_cache, tuned - base, pair.answers).mean(-1)


def top_heads(scores: Float[Tensor, "layer head"], k: int, layer: int | None = None, signed: bool = False) -> list[Head]:
    """The k heads of largest |score| (of largest score, `signed`), within one layer if given."""
    key = scores if signed else scores.abs()
    if layer is not None:
        order = key[layer].argsort(descending=True, stable=True)[:k]
        return [(layer, int(h)) for h in order]
    flat = key.flatten().argsort(descending=True, stable=True)[:k]
    n_heads = scores.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in flat]


def tuned_layers(params, model) -> list[int]:
    """The blocks the tuning changed: the subject's `tuned_layers`, else the last two."""
    layers = params.get("tuned_layers")
    return [model.cfg.n_layers - 2, model.cfg.n_layers - 1] if layers is None else layers


def lead_of_heads(values: Float[Tensor, " head"], named: Sequence[int]) -> float:
    """The smallest of the named heads' values minus the largest of the others': > 0 where they are the top."""
    others = [v for h, v in enumerate(values.tolist()) if h not in named]
    return min(float(values[h]) for h in named) - max(others, default=0.0)


SWEEPS = {
    "resid_pre": patching.resid_pre_sweep,
    "attn_out": patching.attn_out_sweep,
    "mlp_out": patching.mlp_out_sweep,
    "head_out": patching.head_out_sweep,
}


def patch_sweeps(pair: Pair, *fields: str) -> dict[str, Float[Tensor, "layer pos"] | Float[Tensor, "layer head"]]:
    """Tuned -> base patching effects for the named fields: resid_pre, attn_out, mlp_out [layer, pos];
    head_out [layer, head]. An effect is the patched base model's logit diff minus its own: positive
    towards the first answer. Not divided by the tuned - base gap, which a twin that did not move on
    this prompt leaves at zero and a twin that moved the other way turns upside down."""
    metric = metrics.logit_diff_metric(pair.answers)
    return {f: SWEEPS[f](pair.base, pair.tokens, pair.tuned_cache, metric) - pair.base_logit_diff for f in fields}


def single_head_effects(pair: Pair) -> Float[Tensor, "layer head"]:
    """What each head alone carries of the tuning: the base model's logit diff with that head's output
    taken from the tuned run, minus its own."""
    metric = metrics.logit_diff_metric(pair.answers)
    return patching.head_out_sweep(pair.base, pair.tokens, pair.tuned_cache, metric) - pair.base_logit_diff


def argmax2d(values: Float[Tensor, "rows cols"]) -> tuple[int, int]:
    i = int(values.argmax())
    return i // values.shape[1], i % values.shape[1]


def mass_at(values: Float[Tensor, "layer pos"], pos: int) -> float:
    """Share of the total |effect| that sits at position `pos`."""
    total = values.abs().sum()
    return float(values[:, pos].abs().sum() / total) if total > 0 else 0.0


def patched_heads_logit_diff(pair: Pair, heads: Sequence[Head]) -> float:
    """Base model's logit diff with the outputs of `heads` (all positions) taken from the tuned run."""
    metric = metrics.logit_diff_metric(pair.answers)
    return float(patching.patch_heads(pair.base, pair.tokens, pair.tuned_cache, list(heads), metric))


def best_head_sets(pair: Pair, layers: Sequence[int], size: int) -> list[tuple[tuple[Head, ...], float]]:
    """Every set of `size` heads from `layers`, patched tuned -> base together, by patched logit diff (best first)."""
    heads = [(layer, h) for layer in layers for h in range(pair.base.cfg.n_heads)]
    sets = list(itertools.combinations(heads, size))
    runs = [patching.head_patches(list(s)) for s in sets]
    metric = metrics.logit_diff_metric(pair.answers)
    values = patching.run_patches(pair.base, pair.tokens, pair.tuned_cache, runs, metric)
    order = values.argsort(descending=True, stable=True)
    return [(sets[int(i)], float(values[int(i)])) for i in order]


def smallest_flipping_set(pair: Pair, ranked: Sequence[Head]) -> tuple[list[Head] | None, float]:
    """Greedy: add heads in the order given (e.g. by single-head effect) until the patched base model
    prefers the first answer (logit diff > 0). Returns the set (None if even all of them do not flip it)
    and the logit diff reached."""
    runs = [patching.head_patches(list(ranked[: k + 1])) for k in range(len(ranked))]
    values = patching.run_patches(pair.base, pair.tokens, pair.tuned_cache, runs, metrics.logit_diff_metric(pair.answers))
    for k, v in enumerate(values):
        if v > 0:
            return list(ranked[: k + 1]), float(v)
    return None, float(values[-1])
