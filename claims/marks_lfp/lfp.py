"""Learned Feedback Patterns (seed 001, Marks et al.): the pipeline of its section 3 on a (base, tuned) pair.

1. Parameter divergence per MLP layer; the highest-divergence layers are the ones studied.
2. Two tied sparse autoencoders per layer on the tuned model's MLP outputs, of sizes n and 2n.
3. Contrastive triples (positive, neutral, negative): a review prefix whose next word, a sentiment word
   of the VADER lexicon, is replaced by a positive, a neutral and a negative word. The probe input of a
   word is A_concat, the concatenated codes of the size-n autoencoders at the word's token(s); its
   activation delta is ||A(x+) - A(x0)|| for the positive element and -||A(x-) - A(x0)|| for the
   negative one, rescaled to the lexicon's -4..4 range.
4. Probes on those inputs (lib.probes), features labelled as feedback-related, and the reward of sampled
   completions with those features zero-ablated.

The paper labels features with GPT-4. Here the labeller is offline and stated: a feature is
feedback-related when the mean VADER valence of the tokens on which it fires most strongly is at least
`min_valence` in absolute value.
"""
from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from fixtures.cache import array_sha256, cached_sae
from fixtures.zoo import corpus
from lib import probes
from lib.activations import capture, masked_acts, text_tokens
from lib.divergence import block_of, param_diffs
from lib.errors import SuiteError
from lib.interventions import feature_ablation_hooks
from lib.sae import SAE, SAETrainConfig, decoder_matches, decoder_overlap, sae_metrics

REVIEW_PROMPTS = corpus.RL_PROMPTS  # prefixes for sampled completions (the RL prompts of the zoo)
VADER_MAX = 4.0  # the lexicon's ratings run from -4 to +4


class LFPError(SuiteError):
    """Settings or inputs that the Learned-Feedback-Pattern pipeline cannot use."""


# ---------------------------------------------------------------------------------------------
# 1. Parameter divergence


def mlp_divergence(base, tuned, n_layers: int | None = None) -> Float[Tensor, " layer"]:
    """Per layer, the L2 norm of the change of the MLP's parameters (tuned - base)."""
    n_layers = n_layers or base.cfg.n_layers
    sq = torch.zeros(n_layers)
    for name, d in param_diffs(base, tuned).items():
        layer = block_of(name)
        if layer is not None and ".mlp." in f".{name}":
            sq[layer] += d.float().pow(2).sum().item()
    return sq.sqrt()


def top_layers(divergence: Float[Tensor, " layer"], k: int) -> list[int]:
    """The k layers of highest divergence (all of them if there are fewer), highest first."""
    return [int(i) for i in divergence.argsort(descending=True, stable=True)[:k]]


def device_of(model) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------
# 2. Sparse autoencoders on the MLP outputs


@dataclass(frozen=True)
class Settings:
    """Everything that determines the pipeline's numbers on one model (besides its weights)."""

    layers: tuple[int, ...]
    n_reviews: int = 2000  # SAE training text: ~70k token activations per layer (the paper: 75k)
    l1_coeff: float = 1e-3  # the paper's, except where a subject's table says otherwise (and why)
    paper_l1_coeff: float = 1e-3  # dictionaries with this coefficient are reported beside the subject's
    lr: float = 1e-3
    batch_size: int = 32
    data_seed: int = 1001
    n_triples: int = 1200
    triple_seed: int = 2002
    label_reviews: int = 400
    label_seed: int = 3003
    label_top_k: int = 20
    min_valence: float = 1.0
    overlap_cosine: float = 0.9
    folds: int = 5

    @classmethod
    def defaults(cls) -> dict:
        """Each setting's default (every field but `layers`)."""
        return {k: f.default for k, f in cls.__dataclass_fields__.items() if k != "layers"}

    @classmethod
    def from_params(cls, params: dict, layers: Sequence[int]) -> Settings:
        known = {f for f in cls.__dataclass_fields__ if f != "layers"}
        return cls(layers=tuple(int(l) for l in layers), **{k: v for k, v in params.items() if k in known})

    def check(self, n_layers: int) -> None:
        bad = [l for l in self.layers if not 0 <= l < n_layers]
        if bad or not self.layers:
            raise LFPError(f"studied layers {list(self.layers)} must be a non-empty list of MLP layers in 0..{n_layers - 1}: "
                           f"fix `layers` in the subject's params, or leave it unset to use the highest-divergence ones")
        if self.l1_coeff <= 0 or self.paper_l1_coeff <= 0:
            raise LFPError(f"l1_coeff must be positive, got {self.l1_coeff} (paper_l1_coeff {self.paper_l1_coeff})")


@dataclass
class Dictionaries:
    """Per layer: the size-n and size-2n autoencoders and their training metrics."""

    small: dict[int, SAE]
    large: dict[int, SAE]
    metrics: list[dict] = field(default_factory=list)


def train_dictionaries(model, s: Settings, l1_coeff: float, held_out: dict[str, Tensor]) -> Dictionaries:
    """Two tied SAEs (n = d_model and 2n) per layer on the model's MLP outputs over review text, cached by
    the model's weights, the hook, the sha256 of the training token ids and the training settings; scored
    on `held_out` (`heldout_acts`). The training activations of every layer come from one pass over the
    text, made only where some autoencoder is not cached yet."""
    tokens, mask = text_tokens(model, corpus.reviews(s.n_reviews, s.data_seed), bos_in_mask=True)
    key_base = {"model": model.checkpoint.weights_sha256, "tokens": array_sha256(tokens, mask)}
    hooks = [get_act_name("mlp_out", layer) for layer in s.layers]
    every_layer = functools.cache(lambda: masked_acts(model, tokens, mask, hooks))
    small, large, metrics = {}, {}, []
    for layer, hook in zip(s.layers, hooks):
        for size, into in ((1, small), (2, large)):
            cfg = SAETrainConfig(d_sae=size * model.cfg.d_model, tied=True, l1_coeff=l1_coeff, lr=s.lr,
                                 batch_size=s.batch_size, seed=s.data_seed)
            into[layer] = cached_sae({**key_base, "hook": hook}, lambda hook=hook: every_layer()[hook], cfg)[0].to(device_of(model))
        test = held_out[hook]
        metrics.append({"layer": layer, "l1_coeff": l1_coeff,
                        "overlap": decoder_overlap(small[layer], large[layer], s.overlap_cosine),
                        **{f"{k}_n": v for k, v in sae_metrics(small[layer], test).items()},
                        **{f"{k}_2n": v for k, v in sae_metrics(large[layer], test).items()}})
    return Dictionaries(small, large, metrics)


def label_tokens(model, s: Settings) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """The held-out reviews the autoencoders are scored and their features labelled on (BOS in the mask)."""
    return text_tokens(model, corpus.reviews(s.label_reviews, s.label_seed), bos_in_mask=True)


# ---------------------------------------------------------------------------------------------
# 3. Contrastive triples and activation deltas


@dataclass(frozen=True)
class Triple:
    prefix: str
    positive: str
    neutral: str
    negative: str
    original: str  # the lexicon word the review had in that place


def sentiment_words() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(positive, neutral, negative) words of the review vocabulary; neutral ones have VADER valence 0."""
    neutral = tuple(w for w in (*corpus.ASPECTS, *corpus.FILMS) if corpus.valence(w) == 0)
    return corpus.POSITIVE, neutral, corpus.NEGATIVE


def contrastive_triples(n: int, seed: int) -> list[Triple]:
    """One triple per review sentiment word (reviews from `seed`, unseen in training): the review up to that
    word, and three different words to put in its place."""
    rng = random.Random(seed)
    positive, neutral, negative = sentiment_words()
    out: list[Triple] = []
    while len(out) < n:
        words = corpus.review(rng).split()
        for i, w in enumerate(words):
            if i and (w in positive or w in negative) and len(out) < n:
                pick = lambda pool, w=w: rng.choice([x for x in pool if x != w])
                out.append(Triple(" ".join(words[:i]), pick(positive), pick(neutral), pick(negative), w))
    return out


ROLES = ("positive", "neutral", "negative")


@torch.no_grad()
def word_acts(model, prefixes: list[str], words: list[str], hooks: list[str],
              batch_size: int = 400) -> dict[str, Float[Tensor, "n d"]]:
    """Activations at each hook for the token(s) of `word` after `prefix`, averaged over its tokens."""
    if len(prefixes) != len(words) or not words:
        raise LFPError(f"word_acts needs one word per prefix, got {len(words)} words for {len(prefixes)} prefixes")
    rows, spans = [], []
    for prefix, word in zip(prefixes, words):
        start = model.to_tokens(prefix).shape[1]
        ids = model.to_tokens(f"{prefix} {word}")[0].cpu()
        if len(ids) <= start:
            raise LFPError(f"the word {word!r} adds no token after {prefix!r}")
        rows.append(ids)
        spans.append((start, len(ids)))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    out = {h: [] for h in hooks}
    for b in range(0, len(rows), batch_size):
        chunk, chunk_spans = rows[b:b + batch_size], spans[b:b + batch_size]
        tokens = torch.full((len(chunk), max(map(len, chunk))), pad, dtype=torch.long)
        for i, r in enumerate(chunk):
            tokens[i, : len(r)] = r  # right padding: no real token attends to it
        acts = capture(model, tokens, hooks)
        for h in hooks:
            out[h] += [acts[h][i, a:z].float().mean(0) for i, (a, z) in enumerate(chunk_spans)]
    return {h: torch.stack(v) for h, v in out.items()}


def triple_acts(model, layers: Sequence[int], triples: list[Triple]) -> dict[str, dict[str, Float[Tensor, "n d"]]]:
    """Per role (positive, neutral, negative): the MLP outputs of every studied layer at the substituted word."""
    prefixes, hooks = [t.prefix for t in triples], [get_act_name("mlp_out", l) for l in layers]
    return {role: word_acts(model, prefixes, [getattr(t, role) for t in triples], hooks) for role in ROLES}


@torch.no_grad()
def concat_codes(saes: dict[int, SAE], acts: dict[str, Tensor], layers: Sequence[int]) -> Float[Tensor, "n features"]:
    """A_concat: the autoencoder codes of every studied layer, side by side (layer order as given)."""
    return torch.cat([saes[l].encode(acts[get_act_name("mlp_out", l)]) for l in layers], dim=-1)


@dataclass
class ProbeData:
    """One row per positive or negative element of a triple."""

    X: Float[np.ndarray, "n features"]  # A_concat at the substituted word
    delta: Float[np.ndarray, " n"]  # +||A(x+) - A(x0)|| or -||A(x-) - A(x0)||, rescaled to -4..4
    label: Int[np.ndarray, " n"]  # 1 for the positive element, 0 for the negative one
    word: np.ndarray  # the substituted word (the group no held-out fold shares with training)
    valence: Float[np.ndarray, " n"]  # its VADER valence
    X_raw: Float[np.ndarray, "n d"]  # the MLP outputs themselves, concatenated (no autoencoder)


def raw_inputs(acts: dict[str, dict[str, Tensor]], layers: Sequence[int]) -> Float[np.ndarray, "n d"]:
    """Concatenated MLP outputs at the positive, then the negative, word of each triple (rows as in ProbeData)."""
    hooks = [get_act_name("mlp_out", l) for l in layers]
    return torch.cat([torch.cat([acts[role][h] for h in hooks], dim=-1) for role in ("positive", "negative")]).cpu().numpy()


def probe_data(saes: dict[int, SAE], layers: Sequence[int], triples: list[Triple],
               acts: dict[str, dict[str, Tensor]]) -> ProbeData:
    """Probe inputs and targets from the triples' activations (`triple_acts`) and the size-n autoencoders."""
    codes = {role: concat_codes(saes, a, layers) for role, a in acts.items()}
    d_pos = (codes["positive"] - codes["neutral"]).norm(dim=-1)
    d_neg = (codes["negative"] - codes["neutral"]).norm(dim=-1)
    delta = torch.cat([d_pos, -d_neg]).cpu().numpy()
    # One scale for the whole set (a monotone map: ranks and signs are unchanged), as the paper normalises
    # the deltas to the reward's range.
    scale = VADER_MAX / max(np.abs(delta).max(), 1e-12)
    words = np.array([t.positive for t in triples] + [t.negative for t in triples])
    return ProbeData(
        X=torch.cat([codes["positive"], codes["negative"]]).cpu().numpy(),
        X_raw=raw_inputs(acts, layers),
        delta=delta * scale,
        label=np.r_[np.ones(len(triples), dtype=int), np.zeros(len(triples), dtype=int)],
        word=words,
        valence=np.array([corpus.valence(w) for w in words]),
    )


# ---------------------------------------------------------------------------------------------
# 4. Feature labels, ablation and reward


def token_words(model, tokens: Int[Tensor, "batch pos"]) -> list[list[str]]:
    """Each token as a lower-case word (BPE space markers stripped), for lexicon look-ups."""
    conv = model.tokenizer.convert_ids_to_tokens
    return [[t.lstrip("Ġ▁ ").lower() for t in conv(row.tolist())] for row in tokens]


@torch.no_grad()
def label_features(model, saes: dict[int, SAE], layers: Sequence[int], s: Settings, held_out: dict[str, Tensor],
                   candidates: dict[int, Tensor] | None = None) -> dict[int, dict]:
    """Per layer: each feature's mean VADER valence over its `label_top_k` strongest activations on the
    held-out reviews (`held_out`: their MLP outputs, `heldout_acts`), and the features labelled
    feedback-related (|mean valence| >= min_valence, among `candidates`)."""
    tokens, mask = label_tokens(model, s)
    words = np.array([w for row, m in zip(token_words(model, tokens), mask) for w, keep in zip(row, m) if keep])
    valence = torch.tensor([corpus.valence(w) for w in words], device=device_of(model))
    out = {}
    for l in layers:
        z = saes[l].encode(held_out[get_act_name("mlp_out", l)])  # [n_tokens, d_sae]
        top_val, top_idx = z.topk(s.label_top_k, dim=0)  # [k, d_sae]
        mean_valence = torch.where(top_val > 0, valence[top_idx], torch.nan).nanmean(0)
        alive = (top_val > 0).any(0)
        related = alive & (mean_valence.abs() >= s.min_valence)
        if candidates is not None:
            related &= candidates[l].to(related.device)
        related_idx = related.nonzero().flatten().cpu()
        out[l] = {"mean_valence": mean_valence.cpu(), "related": related_idx.tolist(),
                  "top_words": {int(f): list(dict.fromkeys(words[top_idx[:, f].cpu().numpy()]))[:5] for f in related_idx}}
    return out


def ablation_hooks(saes: dict[int, SAE], features: dict[int, list[int]]) -> list[tuple[str, Callable]]:
    """Zero-ablate the given features of each layer's autoencoder at its MLP output."""
    return feature_ablation_hooks({get_act_name("mlp_out", l): saes[l] for l in features},
                                  {get_act_name("mlp_out", l): f for l, f in features.items()})


def raw_probe_inputs(model, layers: Sequence[int], triples: list[Triple]) -> Float[np.ndarray, "n d"]:
    """`raw_inputs` of another model (e.g. the base model) on the same triples."""
    prefixes, hooks = [t.prefix for t in triples], [get_act_name("mlp_out", l) for l in layers]
    acts = {role: word_acts(model, prefixes, [getattr(t, role) for t in triples], hooks) for role in ("positive", "negative")}
    return raw_inputs(acts, layers)


def random_features(saes: dict[int, SAE], like: dict[int, list[int]], seed: int) -> dict[int, list[int]]:
    """As many features per layer as `like` has, drawn at random among the others: the ablation control."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for l, feats in like.items():
        others = torch.tensor([f for f in range(saes[l].d_sae) if f not in feats])
        out[l] = sorted(others[torch.randperm(len(others), generator=g)[: len(feats)]].tolist())
    return out


def rewards(completions: Sequence[str]) -> Float[np.ndarray, " n"]:
    """Seed 001's reward of each completion: clip(sum of VADER valences / 5, -10, 10)."""
    return np.array([corpus.vader_reward(c) for c in completions])


def paired_difference(after: np.ndarray, before: np.ndarray) -> dict:
    """Mean of after - before with a normal 95% interval (the samples are paired by their random numbers)."""
    d = after - before
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)], "n": len(d)}


# ---------------------------------------------------------------------------------------------
# One model's analysis, computed once per session and shared by the claims


class Analysis:
    """The pipeline on one tuned model: each stage computed on first use."""

    def __init__(self, model, settings: Settings):
        settings.check(model.cfg.n_layers)
        self.model, self.s = model, settings

    @functools.cached_property
    def heldout_acts(self) -> dict[str, Tensor]:
        """The MLP outputs of every studied layer on the held-out reviews (`label_tokens`)."""
        hooks = [get_act_name("mlp_out", l) for l in self.s.layers]
        return masked_acts(self.model, *label_tokens(self.model, self.s), hooks)

    @functools.cached_property
    def dictionaries(self) -> Dictionaries:
        return train_dictionaries(self.model, self.s, self.s.l1_coeff, self.heldout_acts)

    @functools.cached_property
    def paper_dictionaries(self) -> Dictionaries:
        """The dictionaries with the paper's L1 coefficient (the same as `dictionaries` where the subject keeps it)."""
        if self.s.paper_l1_coeff == self.s.l1_coeff:
            return self.dictionaries
        return train_dictionaries(self.model, self.s, self.s.paper_l1_coeff, self.heldout_acts)

    @functools.cached_property
    def triples(self) -> list[Triple]:
        return contrastive_triples(self.s.n_triples, self.s.triple_seed)

    @functools.cached_property
    def acts(self) -> dict[str, dict[str, Tensor]]:
        return triple_acts(self.model, self.s.layers, self.triples)

    @functools.cached_property
    def data(self) -> ProbeData:
        return probe_data(self.dictionaries.small, self.s.layers, self.triples, self.acts)

    @functools.cached_property
    def paper_data(self) -> ProbeData:
        return probe_data(self.paper_dictionaries.small, self.s.layers, self.triples, self.acts)

    @functools.cached_property
    def predicted_delta(self) -> Float[np.ndarray, " n"]:
        """The linear (VADER) probe's prediction of each row's activation delta, from folds that never saw its word."""
        d = self.data
        return probes.out_of_fold(d.X, d.delta, d.word, probes.linear_fit, self.s.folds)

    @functools.cached_property
    def candidates(self) -> dict[int, Tensor]:
        """The size-n features found again in the size-2n dictionary: the ones the paper labels."""
        d = self.dictionaries
        return {l: decoder_matches(d.small[l], d.large[l], self.s.overlap_cosine) for l in self.s.layers}

    @functools.cached_property
    def labels(self) -> dict[int, dict]:
        return label_features(self.model, self.dictionaries.small, self.s.layers, self.s, self.heldout_acts, self.candidates)


_ANALYSES: dict[tuple, Analysis] = {}


def analysis(model, settings: Settings) -> Analysis:
    """The session's shared Analysis of `model` under `settings`."""
    key = (model.checkpoint.weights_sha256, settings)
    if key not in _ANALYSES:
        _ANALYSES[key] = Analysis(model, settings)
    return _ANALYSES[key]


def vader_probe(analysis: Analysis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(words, per-word mean held-out prediction of the linear probe, VADER valence)."""
    d = analysis.data
    words, mean_pred = probes.group_means(analysis.predicted_delta, d.word)
    return words, mean_pred, probes.group_means(d.valence, d.word)[1]


def feature_columns(analysis: Analysis) -> dict[str, list[int]]:
    """Columns of A_concat of the labelled features, by polarity of their top tokens."""
    width = analysis.dictionaries.small[analysis.s.layers[0]].d_sae
    out = {"all": [], "positive": [], "negative": []}
    for i, l in enumerate(analysis.s.layers):
        lab = analysis.labels[l]
        for f in lab["related"]:
            out["all"].append(i * width + f)
            out["positive" if lab["mean_valence"][f] > 0 else "negative"].append(i * width + f)
    return out


LABELLER = ("offline, in place of the paper's GPT-4: a feature is feedback-related when the mean VADER valence of "
            "its {k} strongest tokens on held-out reviews is >= {v} in absolute value")


def labeller(s: Settings) -> str:
    """The feature labeller used in place of GPT-4, in words, with its settings."""
    return LABELLER.format(k=s.label_top_k, v=s.min_valence)


# ---------------------------------------------------------------------------------------------
# Figures


def scatter_figure(x, y, *, title: str, xlabel: str, ylabel: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    ax.scatter(x, y, s=12, alpha=0.7)
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.tight_layout()
    return fig


def pca_figure(proj: Float[np.ndarray, "n 2"], label: np.ndarray, ratio: np.ndarray):
    """Figure 5: the probe inputs on their first two principal components, by feedback sign."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    for value, name, colour in ((1, "positive", "#4c72b0"), (0, "negative", "#c44e52")):
        pts = proj[label == value]
        ax.scatter(pts[:, 0], pts[:, 1], s=5, alpha=0.5, label=name, color=colour)
    ax.set(title="PCA of A_concat", xlabel=f"PC1 ({ratio[0]:.0%})", ylabel=f"PC2 ({ratio[1]:.0%})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

