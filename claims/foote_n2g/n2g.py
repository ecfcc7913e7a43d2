"""Neuron to Graph (Foote et al.): a neuron's behaviour on its top-activating dataset examples, distilled
into a pattern trie that predicts its activation on new text.

For each top example (the text up to and including the activating token):
1. prune: keep the shortest suffix that still drives the neuron to `keep` of its original activation;
2. saliency: a context token whose masking (replacement by a blank token) drops the activation below
   `keep` of the pruned one is important; the others become wildcards;
3. augment: each important token is replaced by every other vocabulary token, and a variant that
   keeps `keep` of the activation is a pattern too.
The patterns are stored in a trie read from the activating token backwards; an end node carries the
mean activation of the patterns ending there. On new text, each position takes the value of the
deepest pattern that matches its context (0 where none does): the graph models where the neuron
fires, not its graded response below that.

Evaluation follows Foote et al.: a token fires when its activation reaches `fire_fraction` (0.5) of
the neuron's largest training activation, and the graph's predicted firing is scored by precision,
recall and F1 against the true firing on held-out text. The Pearson correlation of predicted with true
activations is reported beside it; it rewards graded predictions below the firing threshold, which
the graph does not attempt to make. The baseline is the neuron's mean activation per current token on
the same training text (all positions, where the graph sees only the top examples).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from sklearn.metrics import precision_recall_fscore_support
from torch import Tensor
from transformer_lens.utilities import get_act_name

from fixtures.cache import array_sha256, cached_json
from lib.activations import neuron_acts, text_tokens
from lib.errors import SuiteError

WILDCARD = -1


class N2GError(SuiteError):
    """Data that cannot give a neuron graph or its evaluation."""


# ---------------------------------------------------------------------------------------------
# The pattern trie


@dataclass
class Node:
    children: dict[int, Node] = field(default_factory=dict)
    total: float = 0.0
    count: int = 0

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None


class NeuronGraph:
    """A trie of token patterns, keyed from the activating token backwards; WILDCARD matches any token."""

    def __init__(self):
        self.root = Node()
        self.n_patterns = 0

    def add(self, pattern: Sequence[int], activation: float) -> None:
        """`pattern` in reading order, ending with the activating token (never a wildcard)."""
        if not pattern or pattern[-1] == WILDCARD:
            raise N2GError(f"a pattern must end with its activating token, got {list(pattern)}")
        node = self.root
        for tok in reversed(pattern):
            node = node.children.setdefault(int(tok), Node())
        node.total += float(activation)
        node.count += 1
        self.n_patterns += 1

    def match(self, context: Sequence[int]) -> float | None:
        """The value of the deepest pattern ending at the last token of `context` (ties: the largest)."""
        best: tuple[int, float] | None = None
        stack = [(self.root, 0)]
        n = len(context)
        while stack:
            node, depth = stack.pop()
            if node.value is not None and depth > 0 and (best is None or (depth, node.value) > best):
                best = (depth, node.value)
            if depth == n:
                continue
            tok = int(context[n - 1 - depth])
            for key in (tok, WILDCARD) if depth > 0 else (tok,):
                if key in node.children:
                    stack.append((node.children[key], depth + 1))
        return None if best is None else best[1]

    def predict(self, tokens: Int[Tensor, "batch pos"], default: float = 0.0) -> Float[Tensor, "batch pos"]:
        out = torch.full(tokens.shape, default, dtype=torch.float32)
        rows = tokens.tolist()
        for b, row in enumerate(rows):
            for p in range(len(row)):
                v = self.match(row[: p + 1])
                if v is not None:
                    out[b, p] = v
        return out

    def patterns(self) -> list[tuple[list[int], float]]:
        """Every stored pattern (reading order) with its value."""
        out, stack = [], [(self.root, [])]
        while stack:
            node, rev = stack.pop()
            if node.value is not None:
                out.append((rev[::-1], node.value))
            stack += [(child, rev + [tok]) for tok, child in node.children.items()]
        return sorted(out, key=lambda pv: -pv[1])


# ---------------------------------------------------------------------------------------------
# The baseline: mean activation per current token


def token_means(tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"], acts: Float[Tensor, "batch pos"],
                d_vocab: int) -> Float[Tensor, " d_vocab"]:
    """The mean activation of each token type over the real positions; unseen types get the overall mean."""
    ids, a = tokens[mask], acts[mask].double()
    if ids.numel() == 0:
        raise N2GError("no real token positions to fit the token baseline on")
    total = torch.zeros(d_vocab, dtype=torch.float64).index_add_(0, ids, a)
    count = torch.zeros(d_vocab, dtype=torch.float64).index_add_(0, ids, torch.ones_like(a))
    return torch.where(count > 0, total / count.clamp_min(1), a.mean()).float()


# ---------------------------------------------------------------------------------------------
# Building a graph from a neuron's top examples


@dataclass(frozen=True)
class Neuron:
    layer: int
    index: int

    def __str__(self) -> str:
        return f"{self.layer}.{self.index}"


@torch.no_grad()
def last_token_acts(model, rows: Sequence[Sequence[int]], neuron: Neuron, bos: int, pad: int,
                    batch_size: int = 512) -> list[float]:
    """The neuron's activation at the last token of each row, run as `<bos> row`."""
    out = []
    hook = get_act_name("post", neuron.layer)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = 1 + max(map(len, chunk))
        tokens = torch.full((len(chunk), width), pad, dtype=torch.long)
        for i, r in enumerate(chunk):
            tokens[i, 0] = bos
            tokens[i, 1 : 1 + len(r)] = torch.tensor(list(r))
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=hook)
        ends = torch.tensor([len(r) for r in chunk])
        out += cache[hook].float().cpu()[torch.arange(len(chunk)), ends, neuron.index].tolist()
    return out


@dataclass
class Example:
    context: list[int]  # up to and including the activating token (BOS excluded)
    activation: float
    pruned: list[int] = field(default_factory=list)
    pruned_activation: float = 0.0
    pattern: list[int] = field(default_factory=list)  # pruned, unimportant tokens as WILDCARD


def top_examples(tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"], acts: Float[Tensor, "batch pos"],
                 n: int) -> list[Example]:
    """The `n` real positions with the highest positive activation, each with its context."""
    flat = acts.masked_fill(~mask.to(acts.device), float("-inf")).flatten().cpu()
    vals, idx = flat.topk(min(n, int(mask.sum())))
    out = []
    for v, i in zip(vals.tolist(), idx.tolist()):
        if v <= 0:
            break
        b, p = divmod(i, tokens.shape[1])
        ctx = tokens[b, 1 : p + 1].tolist()  # position 0 is BOS
        out.append(Example(ctx, v))
    return out


def prune(model, ex: Example, neuron: Neuron, bos: int, pad: int, keep: float) -> Example:
    """The shortest suffix of the context whose activation stays >= keep * the original."""
    suffixes = [ex.context[s:] for s in range(len(ex.context))]
    acts = last_token_acts(model, suffixes, neuron, bos, pad)
    ok = [s for s, a in enumerate(acts) if a >= keep * ex.activation]
    s = max(ok) if ok else 0
    ex.pruned, ex.pruned_activation = suffixes[s], acts[s]
    return ex


def saliency(model, ex: Example, neuron: Neuron, bos: int, pad: int, blank: int, keep: float) -> Example:
    """Mark the context tokens whose blanking leaves < keep * the pruned activation; the rest become wildcards."""
    pattern = list(ex.pruned)
    masked = [pattern[:j] + [blank] + pattern[j + 1 :] for j in range(len(pattern) - 1)]
    acts = last_token_acts(model, masked, neuron, bos, pad) if masked else []
    for j, a in enumerate(acts):
        if a >= keep * ex.pruned_activation:
            pattern[j] = WILDCARD
    ex.pattern = pattern
    return ex


def augment(model, ex: Example, neuron: Neuron, bos: int, pad: int, vocab: Sequence[int],
            keep: float) -> list[tuple[list[int], float]]:
    """Variants of the pattern with one important token swapped for another vocabulary token that keep
    >= keep * the pruned activation, with their activations (wildcards filled with the example's tokens
    to run, kept as wildcards in the pattern)."""
    variants, rows = [], []
    for j, tok in enumerate(ex.pattern):
        if tok == WILDCARD:
            continue
        for v in vocab:
            if v == tok:
                continue
            row = list(ex.pruned)
            row[j] = v
            pat = list(ex.pattern)
            pat[j] = v
            rows.append(row)
            variants.append(pat)
    acts = last_token_acts(model, rows, neuron, bos, pad) if rows else []
    return [(pat, a) for pat, a in zip(variants, acts) if a >= keep * ex.pruned_activation]


@dataclass
class GraphReport:
    neuron: Neuron
    graph: NeuronGraph
    examples: list[Example]
    token_graph: NeuronGraph  # the same patterns cut to their activating token: the graph without context


def build_graph(model, neuron: Neuron, tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"],
                acts: Float[Tensor, "batch pos"], *, n_examples: int = 20, keep: float = 0.5,
                vocab: Sequence[int] | None = None, augment_tokens: bool = True) -> GraphReport:
    """The neuron's graph from its `n_examples` top-activating positions in `tokens` (`acts`: its
    activations there)."""
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    blank = pad  # a token the text never holds
    special = {bos, pad, tok.eos_token_id, tok.unk_token_id}
    vocab = list(vocab) if vocab is not None else [t for t in range(model.cfg.d_vocab) if t not in special]
    examples = top_examples(tokens, mask, acts, n_examples)
    if not examples:
        raise N2GError(f"neuron {neuron} never fires (activation > 0) on the given text; pick another neuron or more text")
    graph, token_graph = NeuronGraph(), NeuronGraph()
    for ex in examples:
        prune(model, ex, neuron, bos, pad, keep)
        saliency(model, ex, neuron, bos, pad, blank, keep)
        variants = [(ex.pattern, ex.pruned_activation)]
        if augment_tokens:
            variants += augment(model, ex, neuron, bos, pad, vocab, keep)
        for pat, a in variants:
            graph.add(pat, a)
            token_graph.add(pat[-1:], a)
    return GraphReport(neuron, graph, examples, token_graph)


# ---------------------------------------------------------------------------------------------
# Choosing neurons and scoring predictions


def top_neurons(acts: Float[Tensor, "batch pos layer d_mlp"], mask: Bool[Tensor, "batch pos"], layers: Sequence[int],
                per_layer: int) -> list[Neuron]:
    """The `per_layer` neurons with the highest maximum activation over the real positions, per layer
    (`acts[..., i, :]` holds layer `layers[i]`)."""
    peak = acts[mask].amax(0)  # [layer, d_mlp]
    return [Neuron(layer, int(j)) for i, layer in enumerate(layers) for j in peak[i].topk(per_layer).indices.tolist()]


def pearson(pred: Float[Tensor, " n"], true: Float[Tensor, " n"]) -> float:
    """Pearson correlation; 0 where a side is constant (a prediction without variation explains nothing)."""
    p, t = pred.double() - pred.double().mean(), true.double() - true.double().mean()
    denom = float(p.norm() * t.norm())
    return float((p * t).sum()) / denom if denom > 0 else 0.0


def firing_scores(pred: Float[Tensor, " n"], true: Float[Tensor, " n"], threshold: float) -> tuple[float, float, float]:
    """Precision, recall and F1 of "fires" (activation >= threshold) predicted against true (Foote et
    al.'s evaluation); a score whose denominator is empty is 0."""
    p, t = (pred >= threshold).cpu().numpy(), (true >= threshold).cpu().numpy()
    precision, recall, f1, _ = precision_recall_fscore_support(t, p, average="binary", labels=[True, False],
                                                               pos_label=True, zero_division=0.0)
    return float(precision), float(recall), float(f1)


def describe(model, pattern: Sequence[int]) -> str:
    """A pattern as text, wildcards as `*`."""
    return " ".join("*" if t == WILDCARD else model.tokenizer.decode([t]).strip() for t in pattern)


@dataclass(frozen=True)
class NeuronScore:
    """Predicted against true activations on held-out text: the graph, the graph cut to its activating
    tokens (without context) and the token baseline. Firing scores are (precision, recall, F1)."""

    neuron: Neuron
    graph_firing: tuple[float, float, float]
    baseline_firing: tuple[float, float, float]
    token_graph_firing: tuple[float, float, float]
    graph_r: float
    baseline_r: float
    n_fires: int
    n_patterns: int
    top_pattern: str

    @property
    def graph_f1(self) -> float:
        return self.graph_firing[2]

    @property
    def baseline_f1(self) -> float:
        return self.baseline_firing[2]

    @property
    def graph_wins(self) -> bool:
        return self.graph_f1 > self.baseline_f1

    def row(self) -> list:
        fmt = lambda prf: "/".join(f"{v:.3f}" for v in prf)
        return [str(self.neuron), self.n_fires, fmt(self.graph_firing), fmt(self.baseline_firing), self.graph_wins,
                fmt(self.token_graph_firing), round(self.graph_r, 4), round(self.baseline_r, 4), self.n_patterns,
                self.top_pattern]


COLUMNS = ["neuron", "held-out firings", "graph P/R/F1", "token baseline P/R/F1", "graph better (F1)",
           "graph without context P/R/F1", "graph r", "token baseline r", "patterns", "strongest pattern"]


def score_neuron(model, neuron: Neuron, train: tuple[Tensor, Tensor, Tensor], test: tuple[Tensor, Tensor, Tensor],
                 *, fire_fraction: float = 0.5, **build_kw) -> NeuronScore:
    """Build the neuron's graph on `train` = (tokens, mask, activations), fit the token baseline there,
    and score both on `test`. A token fires when its activation reaches `fire_fraction` of the neuron's
    largest training activation."""
    tr_tokens, tr_mask, tr_acts = train
    te_tokens, te_mask, te_acts = test
    report = build_graph(model, neuron, tr_tokens, tr_mask, tr_acts, **build_kw)
    graph_pred = report.graph.predict(te_tokens)[te_mask]
    base_pred = token_means(tr_tokens, tr_mask, tr_acts, model.cfg.d_vocab)[te_tokens][te_mask]
    token_pred = report.token_graph.predict(te_tokens)[te_mask]
    true = te_acts[te_mask]
    threshold = fire_fraction * float(tr_acts[tr_mask].max())
    top = report.graph.patterns()[0][0]
    return NeuronScore(neuron, firing_scores(graph_pred, true, threshold), firing_scores(base_pred, true, threshold),
                       firing_scores(token_pred, true, threshold), pearson(graph_pred, true), pearson(base_pred, true),
                       int((true >= threshold).sum()), report.graph.n_patterns, describe(model, top))


def score_top_neurons(model, train_texts: Sequence[str], test_texts: Sequence[str], layers: Sequence[int],
                      per_layer: int, **score_kw) -> list[NeuronScore]:
    """`score_neuron` for the `per_layer` neurons of each layer with the highest training activation."""
    train_tokens, train_mask = text_tokens(model, train_texts)
    test_tokens, test_mask = text_tokens(model, test_texts)
    train_acts, test_acts = neuron_acts(model, train_tokens, layers), neuron_acts(model, test_tokens, layers)
    scores = []
    for neuron in top_neurons(train_acts, train_mask, layers, per_layer):
        i = list(layers).index(neuron.layer)
        scores.append(score_neuron(model, neuron, (train_tokens, train_mask, train_acts[..., i, neuron.index]),
                                   (test_tokens, test_mask, test_acts[..., i, neuron.index]), **score_kw))
    return scores


def tokenizer_digest(model) -> str:
    """sha256 of the tokenizer's vocabulary (token string -> id)."""
    return hashlib.sha256(json.dumps(model.tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()


def cached_top_neuron_scores(model, train_texts: Sequence[str], test_texts: Sequence[str], layers: Sequence[int],
                             per_layer: int, **score_kw) -> list[NeuronScore]:
    """`score_top_neurons`, cached under `.cache/n2g/` by the model's weights, its tokenizer, the token
    arrays of both texts, the arguments and the source of this module and of `lib.activations`."""
    full = {"weights_sha256": model.checkpoint.weights_sha256, "tokenizer": tokenizer_digest(model),
            "train": array_sha256(*text_tokens(model, train_texts)), "test": array_sha256(*text_tokens(model, test_texts)),
            "layers": list(layers), "per_layer": per_layer, **score_kw}

    def compute():
        return [dataclasses.asdict(s) for s in score_top_neurons(model, train_texts, test_texts, layers, per_layer,
                                                                 **score_kw)]

    payload = cached_json("n2g", full, compute, modules=(__name__, "lib.activations"))
    return [NeuronScore(**{**s, "neuron": Neuron(**s["neuron"]), **{k: tuple(s[k]) for k in FIRING_FIELDS}})
            for s in payload]


FIRING_FIELDS = ("graph_firing", "baseline_firing", "token_graph_firing")
