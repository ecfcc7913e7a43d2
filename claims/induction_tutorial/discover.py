"""The parameters of the seed-002 claims, found on a model's discovery prompts (name pairs the claims'
own family does not hold): the head that matters most and the heads that support it, the heads of each
attention class, the block where the last name moves, chosen by their mean over those prompts with how
far each choice leads the runner-up (`lib.stats.choose`)."""
from __future__ import annotations

from collections.abc import Sequence

from claims.induction_tutorial import induction as I
from fixtures.discover import Found, Pick
from lib.heads import parse_head
from lib.stats import choose

SUPPORT_SHARE = 0.1  # a supporting head's mean |effect| is at least this share of the top head's
LATE = 0.75  # "around layer 10" of 12 blocks: the last quarter
# IND-05's flow in gelu-2l: per heatmap row (embeddings, after block 0, after block 1), the named position
# where the patch matters most
PUBLISHED_FLOW = {"first_first_name": ["first_name", "last_name", "final"], "last_name": ["last_name", "last_name", "final"]}


def discover(model, params: dict, family: I.Family) -> dict[str, Found]:
    """IND-02, -03, -06, -07 and -08's parameters on `family` (prompts with last-name corruptions)."""
    heads = I.head_labels(model)
    tasks = [I.name_task(model, p, a, {"last_name": c})
             for p, a, c in zip(family.prompts, family.answers, family.corruptions["last_name"])]
    pos = params["positions"]
    found = {}

    effects = [{h: abs(I.effect_of(e, h)) for h in heads} for e in I.family_head_effects(model, family)]
    c = choose(effects)
    top = c.chosen[0]
    supporting = sorted(h for h, m in c.means.items() if h != top and m >= SUPPORT_SHARE * c.means[top])
    supporting = supporting or [c.runner_up]
    found["IND-06"] = Found({
        "induction_head": Pick(top, c, c.runner_up, "the largest mean |effect| of head patching from the last-name "
                                                    "corruption"),
        "supporting_heads": Pick(supporting, None, None,
                                 f"every other head with at least {SUPPORT_SHARE} of the top head's mean |effect|"),
        "n_next": Pick(len(supporting), None, None, "as many as there are supporting heads")})

    scores = I.family_class_scores(model, family)
    ind = choose({h: I.score_of(s["induction"], h) for h in heads} for s in scores)
    layer = parse_head(ind.chosen[0])[0]
    roles = {"induction_head": Pick(ind.chosen[0], ind, ind.runner_up, "the top mean induction score")}
    earlier = [h for h in heads if parse_head(h)[0] < layer]
    for role, kind in (("prev_token_head", "previous_token"), ("duplicate_token_head", "duplicate_token")):
        if earlier:
            cls = choose({h: I.score_of(s[kind], h) for h in earlier} for s in scores)
            roles[role] = Pick(cls.chosen[0], cls, cls.runner_up,
                               f"the top mean {kind.replace('_', '-')} score before layer {layer}")
    found["IND-07"] = Found(dict(roles))
    found["IND-08"] = Found(dict(roles)) if earlier else Found(note=(
        f"not registered: the head with the top induction score sits in layer {layer}, so no earlier head can "
        "compose with it"))

    # IND-03's range is the claim itself ("around layer 10" of 12: late), scaled to this depth, not a
    # finding; the block where the move happens on the discovery prompts is shown beside it
    n_layers = model.cfg.n_layers
    late = [int(LATE * n_layers), n_layers - 1]
    moves = [I.transition_layer(I.resid_flow(model, task, "last_name"), I.logit_diffs(model, task)["clean"],
                                pos["last_name"], pos["final"]) for task in tasks]
    commonest = max(set(moves), key=moves.count)
    found["IND-03"] = Found({"layer_range": Pick(late, None, None, "the published depth (around layer 10 of 12: the "
                                                                   "last quarter of the blocks), scaled to this model")},
                            note=f"on the discovery prompts the last name moves after block {commonest} on "
                                 f"{moves.count(commonest)} of {len(moves)}")

    rival_max, answer_min = params["max_corrupt_rank"], params["min_clean_rank"]
    swaps = [sum(_swaps(model, task, layer, pos["last_name"], rival_max, answer_min) for task in tasks) / len(tasks)
             for layer in range(model.cfg.n_layers)]
    deepest = max((layer for layer, share in enumerate(swaps) if share >= 0.5), default=None)
    found["IND-02"] = Found({"layer": Pick(deepest, None, None, "the deepest block after which patching the last-name "
                                                                "position swaps the answers on at least half the prompts")}
                            ) if deepest is not None else Found(note=(
        "not registered: after no block does patching the last-name position swap the answers on half the prompts"))
    return found


def discover_canonical(model, params: dict, only: Sequence[str] = ("IND-05", "IND-06", "IND-07")) -> dict[str, Found]:
    """From the canonical prompt alone (unconfirmed): IND-05's argmax positions per heatmap row, named where
    they are named positions, and, without a family, the heads of IND-06 and IND-07."""
    task = I.task_from_params(model, params)
    diffs = I.logit_diffs(model, task)
    by_index = {v: k for k, v in params["positions"].items()}
    found = {}
    if "IND-05" in only:  # the flow is the claim itself, stated for a two-layer model: the published one
        rows = {c: [by_index.get(p, p) for p in I.argmax_positions(I.resid_flow(model, task, c), diffs["clean"])]
                for c in PUBLISHED_FLOW if c in task.corrupted}
        seen = "; ".join(f"{c}: {r}" for c, r in rows.items())
        found["IND-05"] = Found({"argmax_positions": Pick(PUBLISHED_FLOW, None, None, "the published flow of gelu-2l")},
                                note=f"on the canonical prompt the argmax positions are {seen}") \
            if model.cfg.n_layers == 2 else Found(note="not registered: the claim is about a two-layer model's flow")
    if "IND-06" in only:
        ranked = I.ranked_heads(I.head_patching(model, task, by_pos=False).effect)
        found["IND-06"] = Found({"induction_head": Pick(ranked[0], None, None, "the top head of head patching on the "
                                                                               "canonical prompt alone: unconfirmed"),
                                 "supporting_heads": Pick(ranked[1:3], None, None, "the next two heads")})
    if "IND-07" in only:
        scores = I.class_scores(model, task.tokens)
        found["IND-07"] = Found({"induction_head": Pick(I.top_head(scores["induction"]), None, None,
                                                        "the top induction score on the canonical prompt alone: "
                                                        "unconfirmed")})
    return found


def _swaps(model, task, layer: int, position: int, rival_max: int, answer_min: int) -> bool:
    ranks = I.patched_ranks(model, task, "last_name", layer, position)
    return ranks["rival"] <= rival_max and ranks["answer"] >= answer_min
