"""The induction circuit of seed 002 ("Her name was Alex Hart. Tomorrow at lunch time Alex" -> " Hart"):
the name task and its corruptions, residual-stream and head patching in the tutorial's direction,
head classes from attention patterns, composition against the layer pair's distribution, and prompt
families of name pairs (the parameters are found by claims/induction_tutorial/discover.py).

Direction: as in the tutorial, every patch copies an activation of a corrupted run (the donor) into
the clean run (the recipient), and the metric is the clean run's logit diff between the clean answer
(" Hart") and its rival (" Carroll", the last name of the last-name corruption). The effect of a
patch is `clean logit diff - patched logit diff`: how much of the clean answer's lead it removes.

Ranks are 1-based here ("top-4" = rank <= 4), as the tutorial counts them.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from lib.errors import PromptError
from lib.heads import (
    KINDS,
    attention_patterns,
    composition_scores,
    detection_pattern,
    head_name,
    induction_stripe_scores,
    parse_head,
)
from lib.metrics import answer_rank, logit_diff, logit_diff_metric, per_prompt_logit_diff_metric
from lib.names import FIRST_NAMES, LAST_NAMES
from lib.patching import (
    Recipient,
    donor_cache,
    head_out_by_pos_sweep,
    head_out_sweep,
    head_patches,
    patched_logits,
    recipient_run,
    run_patches,
)
from lib.prompts import answer_token, differing_positions, paired_tokens, str_tokens, to_tokens
from lib.sequences import repeated_random_tokens
from lib.stats import relative_margin

CORRUPTIONS = ("last_name", "first_first_name", "second_first_name")
POSITIONS = ("first_name", "last_name", "final")
# The head class each named head of the circuit belongs to.
HEAD_ROLES = {"prev_token_head": "previous_token", "duplicate_token_head": "duplicate_token", "induction_head": "induction"}


# ---------------------------------------------------------------------------------------------
# Heads written "layer.head"


def head_labels(model) -> list[str]:
    return [head_name(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]


# ---------------------------------------------------------------------------------------------
# The task


@dataclass
class NameTask:
    """The clean prompt, its corruptions (same length), the answer and its rival, as tokens."""

    tokens: Int[Tensor, "batch pos"]
    corrupted: dict[str, Int[Tensor, "batch pos"]]
    answers: Int[Tensor, "batch 2"]  # (clean answer, rival) per prompt
    labels: list[str]  # the clean prompt's tokens, "pos:token"

    @property
    def n_pos(self) -> int:
        return self.tokens.shape[1]


def rival_token(clean_tokens: Tensor, last_name_tokens: Tensor) -> Tensor:
    """The rival answer of each prompt: the token where the last-name corruption differs from the clean prompt."""
    where = differing_positions(clean_tokens, last_name_tokens)
    if len(where) != 1:
        raise PromptError(f"the last-name corruption must differ from the clean prompt at one position, not {where}")
    return last_name_tokens[:, where[0]]


def name_task(model, prompt: str | Sequence[str], answer: str | Sequence[str], corruptions: Mapping[str, str | Sequence[str]]) -> NameTask:
    """Tokens of the clean prompt(s), the corruptions, and (answer, rival) ids; the rival is the last
    name of the `last_name` corruption (" Carroll")."""
    tokens = to_tokens(model, prompt)
    corrupted = {}
    for kind, text in corruptions.items():
        _, corrupted[kind] = paired_tokens(model, prompt, text)
    answers = [answer] if isinstance(answer, str) else list(answer)
    clean_ids = torch.tensor([answer_token(model, a) for a in answers]).expand(tokens.shape[0])
    if "last_name" not in corrupted:
        raise PromptError("the name task needs a `last_name` corruption: its last name is the rival answer")
    rival = rival_token(tokens, corrupted["last_name"])
    labels = [f"{i}:{s}" for i, s in enumerate(str_tokens(model, tokens[0]))]
    return NameTask(tokens, corrupted, torch.stack([clean_ids, rival], dim=1), labels)


def task_from_params(model, params: Mapping) -> NameTask:
    return name_task(model, params["prompt"], params["answer"], params["corruptions"])


@torch.no_grad()
def run_logits(model, tokens: Tensor) -> Tensor:
    return model(tokens)


def logit_diffs(model, task: NameTask) -> dict[str, float]:
    """Mean logit diff (answer - rival) on the clean prompt and on each corruption."""
    out = {"clean": float(logit_diff(run_logits(model, task.tokens), task.answers))}
    for kind, tokens in task.corrupted.items():
        out[kind] = float(logit_diff(run_logits(model, tokens), task.answers))
    return out


def ranks(logits: Tensor, ids: Sequence[int], pos: int = -1) -> list[int]:
    """1-based rank of each token id at `pos` of the first prompt."""
    return [int(answer_rank(logits[:1], int(i), pos)[0]) + 1 for i in ids]


def top_predictions(model, tokens: Tensor, k: int = 5) -> list[str]:
    logits = run_logits(model, tokens)[0, -1]
    return str_tokens(model, logits.topk(k).indices.tolist())


def canonical_positions(model, params: Mapping) -> dict[str, int]:
    """The positions of the canonical prompt: its final token is the repeated first name, its answer the last name."""
    toks = [s.strip() for s in str_tokens(model, to_tokens(model, params["prompt"])[0])]
    return name_positions(model, params["prompt"], first=toks[-1], last=str(params["answer"]).strip())


def name_positions(model, prompt: str, first: str, last: str) -> dict[str, int]:
    """Positions of the first occurrence of `first`, of `last`, and of the final token, in the tokens of `prompt`."""
    toks = [s.strip() for s in str_tokens(model, to_tokens(model, prompt)[0])]
    try:
        first_pos = toks.index(first)
        last_pos = toks.index(last, first_pos)
    except ValueError:
        raise PromptError(f"{first!r} or {last!r} is not a token of {prompt!r} ({toks})") from None
    return {"first_name": first_pos, "last_name": last_pos, "final": len(toks) - 1}


# ---------------------------------------------------------------------------------------------
# Residual-stream patching (Method 1)


def flow_hooks(model) -> list[str]:
    """The residual stream before the first block, then after every block (the tutorial's rows)."""
    return [get_act_name("resid_pre", 0)] + [get_act_name("resid_post", l) for l in range(model.cfg.n_layers)]


def flow_row_labels(model) -> list[str]:
    return ["embed"] + [f"after L{l}" for l in range(model.cfg.n_layers)]


def resid_flow(model, task: NameTask, corruption: str) -> Float[Tensor, "row pos"]:
    """Clean logit diff with the residual stream at (row, pos) taken from the corrupted run; rows as
    `flow_hooks` (n_layers + 1)."""
    names = flow_hooks(model)
    cache = donor_cache(model, task.corrupted[corruption], model, names=lambda n: n in names)
    runs = [[(name, (slice(None), pos))] for name in names for pos in range(task.n_pos)]
    values = run_patches(model, task.tokens, cache, runs, logit_diff_metric(task.answers))
    return values.reshape(len(names), task.n_pos)


def flow_effect(flow: Tensor, clean: float) -> Tensor:
    """|clean - patched| per (row, pos)."""
    return (clean - flow).abs()


def argmax_positions(flow: Tensor, clean: float) -> list[int]:
    """For each row, the position where the patch changes the logit diff most."""
    return flow_effect(flow, clean).argmax(-1).tolist()


def argmax_margins(flow: Tensor, clean: float) -> list[float]:
    """For each row, how far the top position's effect leads the runner-up's, as a share of its own."""
    top2 = flow_effect(flow, clean).sort(-1, descending=True).values[:, :2].tolist()
    return [relative_margin(a, b) for a, b in top2]


def transition_layer(flow: Tensor, clean: float, source: int, final: int) -> int | None:
    """The first block after which the patch effect at the final position exceeds the effect at `source`
    (the block that moves the information), or None if it never does."""
    eff = flow_effect(flow, clean)
    for row in range(1, eff.shape[0]):
        if eff[row, final] > eff[row, source]:
            return row - 1
    return None


def patched_ranks(model, task: NameTask, corruption: str, layer: int, pos: int) -> dict[str, int]:
    """1-based ranks of the answer and its rival with blocks.{layer}.hook_resid_post at `pos` taken from
    the corrupted run (the tutorial's first patch)."""
    name = get_act_name("resid_post", layer)
    cache = donor_cache(model, task.corrupted[corruption], model, names=lambda n: n == name)
    logits = patched_logits(model, task.tokens, cache, [(name, (slice(None), pos))])
    answer, rival = ranks(logits, task.answers[0].tolist())
    return {"answer": answer, "rival": rival}


# ---------------------------------------------------------------------------------------------
# Head patching (Method 2 and the bonus by position)


@dataclass
class HeadPatching:
    clean: float
    corrupted: float
    all_pos: Float[Tensor, "layer head"]  # patched logit diff, head patched at every position
    by_pos: Float[Tensor, "layer_head pos"] | None = None  # patched logit diff, rows "l.h"

    @property
    def effect(self) -> Tensor:
        """clean - patched, per head."""
        return self.clean - self.all_pos


def head_patching(model, task: NameTask, corruption: str = "last_name", by_pos: bool = True,
                  recipient: Recipient | None = None) -> HeadPatching:
    """Each head's output (hook_z) from the corrupted run patched into the clean run, at all positions and
    (if `by_pos`) at each position. `recipient`: the clean run's `recipient_run`, shared between corruptions."""
    rec = recipient or clean_run(model, task)
    with torch.no_grad():
        corrupt_logits, cache = model.run_with_cache(task.corrupted[corruption], names_filter=_is_z)
    return _head_patching(model, task, rec, corrupt_logits, cache, by_pos)


def clean_run(model, task: NameTask) -> Recipient:
    """The clean prompt's run, which head patching from every corruption starts from."""
    return recipient_run(model, task.tokens, _z_hooks(model))


def _is_z(name: str) -> bool:
    return name.endswith("attn.hook_z")


def _z_hooks(model) -> list[str]:
    return [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]


def _head_patching(model, task: NameTask, rec: Recipient, corrupt_logits: Tensor, cache, by_pos: bool) -> HeadPatching:
    metric = logit_diff_metric(task.answers)
    clean, corrupt = float(metric(rec.logits)), float(metric(corrupt_logits))
    all_pos = head_out_sweep(model, task.tokens, cache, metric, recipient=rec)
    grid = None
    if by_pos:
        lph = head_out_by_pos_sweep(model, task.tokens, cache, metric, recipient=rec)  # layer pos head
        grid = lph.permute(0, 2, 1).reshape(-1, task.n_pos)
    return HeadPatching(clean, corrupt, all_pos, grid)


def ranked_heads(effect: Float[Tensor, "layer head"]) -> list[str]:
    """Heads by decreasing |effect|."""
    n_heads = effect.shape[1]
    order = effect.abs().flatten().argsort(descending=True, stable=True).tolist()
    return [head_name(i // n_heads, i % n_heads) for i in order]


# ---------------------------------------------------------------------------------------------
# Head classes from attention patterns (Method 3)


def stripe_scores(model, half: int, n: int, seed: int = 0) -> Float[Tensor, "layer head"]:
    """Every head's induction stripe on `n` random token sequences of length `half`, repeated once."""
    return induction_stripe_scores(model, repeated_random_tokens(model, half, batch=n, seed=seed), half)


def class_scores(model, tokens: Int[Tensor, "batch pos"]) -> dict[str, Float[Tensor, "layer head"]]:
    """Share of each head's attention on the cells of each detection pattern (previous-token,
    duplicate-token, induction), averaged over the destination positions that have such a cell, then
    over prompts. It is `transformer_lens.head_detector`'s "mul" score times (positions / positions with a
    cell): the same ranking of heads, on a scale where 1 means every such position attends only there."""
    return pattern_class_scores(attention_patterns(model, tokens), tokens)


def pattern_class_scores(patterns: Float[Tensor, "layer batch head dest src"], tokens: Int[Tensor, "batch pos"]
                         ) -> dict[str, Float[Tensor, "layer head"]]:
    """`class_scores` from the attention patterns of `tokens`."""
    patterns = patterns.float()
    out = {}
    for kind in KINDS:
        det = torch.stack([detection_pattern(t, kind) for t in tokens]).to(patterns)  # batch dest src
        rows = (det.sum(-1) > 0).float()  # batch dest
        on = (patterns * det[None, :, None]).sum(-1)  # layer batch head dest
        per_prompt = (on * rows[None, :, None]).sum(-1) / rows.sum(-1).clamp(min=1)[None, :, None]
        out[kind] = per_prompt.mean(1)
    return out


def detector_scores(model, prompts: str | Sequence[str], kind: str) -> Float[Tensor, "layer head"]:
    """`transformer_lens.head_detector.detect_head` (default options) for the cross-check."""
    from transformer_lens.head_detector import detect_head

    return detect_head(model, prompts, f"{kind}_head").float()


def classify(scores: Mapping[str, Tensor], min_score: float) -> dict[str, str]:
    """Each head's class: the kind of its highest score if that is at least `min_score`, else "other"."""
    kinds = list(scores)
    stack = torch.stack([scores[k] for k in kinds])  # kind layer head
    best, which = stack.max(0)
    n_heads = stack.shape[-1]
    return {
        head_name(l, h): (kinds[int(which[l, h])] if float(best[l, h]) >= min_score else "other")
        for l in range(stack.shape[1])
        for h in range(n_heads)
    }


def top_head(scores: Tensor, layers: Sequence[int] | None = None) -> str:
    """The highest-scoring head (within `layers`, if given)."""
    s = scores.clone()
    if layers is not None:
        mask = torch.ones(s.shape[0], dtype=torch.bool)
        mask[list(layers)] = False
        s[mask] = float("-inf")
    i = int(s.flatten().argmax())
    return head_name(i // s.shape[1], i % s.shape[1])


def score_of(scores: Tensor, head: str) -> float:
    l, h = parse_head(head)
    return float(scores[l, h])


def head_pattern(model, tokens: Tensor, head: str) -> Float[Tensor, "dest src"]:
    l, h = parse_head(head)
    return attention_patterns(model, tokens[:1])[l, 0, h]


# ---------------------------------------------------------------------------------------------
# Composition (the check the tutorial proposes)


@dataclass
class Composition:
    mode: str
    sender: str
    receiver: str
    score: float
    layer_scores: Tensor  # every (sender layer head, receiver layer head) pair
    percentile: float  # share of the pairs of those two layers scoring below this pair
    zscore: float


def composition(model, mode: str, sender: str, receiver: str) -> Composition:
    """The `mode` (Q, K, V) composition score of sender -> receiver, against all pairs of their two layers."""
    ls, hs = parse_head(sender)
    lr, hr = parse_head(receiver)
    if ls >= lr:
        raise ValueError(f"{sender} is not in an earlier layer than {receiver}; heads only compose forward")
    scores = composition_scores(model, mode)
    pairs = scores[ls, :, lr, :].flatten()
    value = float(scores[ls, hs, lr, hr])
    return Composition(
        mode, sender, receiver, value, pairs,
        percentile=float((pairs < value).float().mean()),
        zscore=float((value - pairs.mean()) / pairs.std()),
    )


# ---------------------------------------------------------------------------------------------
# Prompt families: the canonical prompt with other single-token names

def single_token_names(model, names: Sequence[str]) -> list[str]:
    """The names that are one known token (with their leading space) for this model."""
    out = []
    for n in names:
        try:
            answer_token(model, " " + n)
        except PromptError:
            continue
        out.append(n)
    return out


@dataclass
class Family:
    prompts: list[str]
    answers: list[str]
    corruptions: dict[str, list[str]]
    names: list[tuple[str, str, str]] = field(default_factory=list)  # (first, last, rival last)


def name_template(prompt: str, first: str, last: str) -> str:
    """The prompt with its first name and last name as {first} and {last}."""
    if prompt.count(first) != 2 or prompt.count(last) != 1:
        raise PromptError(f"expected {first!r} twice and {last!r} once in {prompt!r}")
    return prompt.replace(first, "{first}").replace(last, "{last}")


class NoFamily(PromptError):
    """The model's vocabulary holds too few of the family's names to build it."""


def family_names(model, spec: Mapping | None) -> tuple[list[str], list[str]]:
    """The first and last names that are single tokens for this model: the subject's (`spec`, `{first = [...],
    last = [...]}`), else the built-in English names as written or, for a vocabulary without capitals,
    lowercased."""
    if spec is not None:
        return single_token_names(model, spec["first"]), single_token_names(model, spec["last"])
    written = single_token_names(model, FIRST_NAMES), single_token_names(model, LAST_NAMES)
    if len(written[0]) >= 2 and len(written[1]) >= 3:
        return written
    return (single_token_names(model, [n.lower() for n in FIRST_NAMES]),
            single_token_names(model, [n.lower() for n in LAST_NAMES]))


def name_family(model, params: Mapping, n: int, seed: int = 0) -> Family:
    """`n` variants of the canonical prompt with other (first, last) names, each with its last-name
    corruption (another last name): distinct pairs drawn from the names that are single tokens. NoFamily
    where fewer than 2 first and 3 last names are."""
    pos = params["positions"]
    toks = [s.strip() for s in str_tokens(model, to_tokens(model, params["prompt"])[0])]
    first, last = toks[pos["first_name"]], toks[pos["last_name"]]
    template = params.get("family_template") or name_template(params["prompt"], first, last)
    firsts, lasts = family_names(model, params.get("family_names"))
    if len(firsts) < 2 or len(lasts) < 3:
        whose = "the subject's `family_names`" if params.get("family_names") else "the built-in English names"
        raise NoFamily(f"{len(firsts)} first and {len(lasts)} last names of {whose} are single tokens for this model "
                       f"(2 and 3 at the least); give the subject `family_names = {{ first = [...], last = [...] }}` "
                       f"in its own vocabulary")
    rng = random.Random(seed)
    seen, names = set(), []
    while len(names) < min(n, len(firsts) * len(lasts)):
        f, l, r = rng.choice(firsts), *rng.sample(lasts, 2)
        if (f, l) in seen or (f, l) == (first, last):
            continue
        seen.add((f, l))
        names.append((f, l, r))
    fill = lambda f, l: template.format(first=f, last=l)
    return Family(
        prompts=[fill(f, l) for f, l, _ in names],
        answers=[" " + l for _, l, _ in names],
        corruptions={"last_name": [fill(f, r) for f, _, r in names]},
        names=names,
    )


def family_head_effects(model, family: Family, heads: Sequence[str] | None = None) -> list[Float[Tensor, "layer head"]]:
    """Per prompt of the family, each head's effect in last-name head patching: every head, or only `heads`
    (the others NaN). Where the prompts share a length, one patched run per head serves them all."""
    tasks = [name_task(model, p, a, {"last_name": c})
             for p, a, c in zip(family.prompts, family.answers, family.corruptions["last_name"])]
    heads = heads if heads is not None else head_labels(model)
    parsed = [parse_head(h) for h in heads]
    groups = [tasks] if len({t.tokens.shape for t in tasks} | {t.corrupted["last_name"].shape for t in tasks}) == 1 \
        else [[t] for t in tasks]
    out = []
    for group in groups:
        tokens = torch.cat([t.tokens for t in group])
        answers = torch.cat([t.answers for t in group])
        with torch.no_grad():
            _, cache = model.run_with_cache(torch.cat([t.corrupted["last_name"] for t in group]), names_filter=_is_z)
        rec = recipient_run(model, tokens, _z_hooks(model))
        metric = per_prompt_logit_diff_metric(answers)
        clean = metric(rec.logits)  # [prompt]
        patched = run_patches(model, tokens, cache, [head_patches([lh]) for lh in parsed], metric, recipient=rec)
        for i in range(len(group)):
            effect = torch.full((model.cfg.n_layers, model.cfg.n_heads), float("nan"))
            for (layer, head), value in zip(parsed, patched[:, i]):
                effect[layer, head] = clean[i] - value
            out.append(effect)
    return out


def top_of(effect: Float[Tensor, "layer head"], heads: Sequence[str]) -> str:
    """The head among `heads` with the largest |effect|."""
    return max(heads, key=lambda h: abs(effect_of(effect, h)))


def effect_of(effect: Float[Tensor, "layer head"], head: str) -> float:
    return float(effect[parse_head(head)])


def family_class_scores(model, family: Family) -> list[dict[str, Tensor]]:
    """Per prompt of the family, the class scores of every head."""
    tokens = to_tokens(model, family.prompts)
    patterns = attention_patterns(model, tokens)
    return [pattern_class_scores(patterns[:, i : i + 1], tokens[i : i + 1]) for i in range(len(tokens))]


def _runner_up(scores: Tensor, head: str) -> float:
    s = scores.clone()
    l, h = parse_head(head)
    s[l, h] = float("-inf")
    return float(s.max())


def class_margin(scores: Float[Tensor, "layer head"], head: str) -> float:
    """How far `head`'s score leads the best other head's, as a share of its own (negative: it trails)."""
    return relative_margin(score_of(scores, head), _runner_up(scores, head))


# ---------------------------------------------------------------------------------------------
# The tutorial's figures


def flow_figure(model, flow: Tensor, task: NameTask, corruption: str):
    from lib.plots import heatmap

    return heatmap(flow, title=f"logit diff, resid stream patched from the {corruption.replace('_', ' ')} run",
                   xlabel="position", ylabel="layer", xticks=task.labels, yticks=flow_row_labels(model),
                   cbar="logit diff (answer - rival)")


def head_figure(hp: HeadPatching, corruption: str):
    from lib.plots import heatmap

    return heatmap(hp.all_pos, title=f"logit diff, head output patched from the {corruption.replace('_', ' ')} run",
                   xlabel="head", ylabel="layer", cbar="logit diff (answer - rival)")


def head_by_pos_figures(model, hp: HeadPatching, task: NameTask, corruption: str) -> list[tuple[str, object]]:
    """Head-by-position patching as logit diff, and as difference from the clean logit diff."""
    from lib.plots import heatmap

    what = corruption.replace("_", " ")
    out = []
    for title, values in ((f"head x position patching ({what}): logit diff", hp.by_pos),
                          (f"head x position patching ({what}): logit diff - clean logit diff", hp.by_pos - hp.clean)):
        out.append((title, heatmap(values, title=title, xlabel="position", ylabel="layer.head", xticks=task.labels,
                                   yticks=head_labels(model), cbar="logit diff")))
    return out


def pattern_figure(model, task: NameTask, head: str, role: str):
    from lib.plots import attention_pattern

    return attention_pattern(head_pattern(model, task.tokens, head), task.labels, title=f"head {head} ({role})")


def composition_figure(comp: Composition, n_heads: int):
    from lib.plots import heatmap

    return heatmap(comp.layer_scores.reshape(n_heads, n_heads), centre=False,
                   title=f"{comp.mode}-composition, layer {comp.sender.split('.')[0]} -> {comp.receiver.split('.')[0]} "
                         f"({comp.sender} -> {comp.receiver}: {comp.score:.3f})",
                   xlabel=f"receiving head (layer {comp.receiver.split('.')[0]})",
                   ylabel=f"sending head (layer {comp.sender.split('.')[0]})", cbar="composition score")
