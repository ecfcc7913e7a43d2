"""Claims of "RLHF + TransformerLens" (seed 000): a GPT-2 movie-review model before and after RLHF
towards negative reviews, on the prompt "This movie was really" with answers " bad" / " good".

Logit diff = logit(" bad") - logit(" good") at the last position. Patching goes tuned -> base: the base
model runs, the named activations come from the tuned model on the same tokens; an effect is the patched
base model's logit diff minus its own (the blog divides it by tuned - base; the rankings are the same
where the tuning moved towards ' bad', and a twin that did not move leaves nothing to divide by).
"""
import math

import pytest

from claims.tigges_rlhf import pair as P
from fixtures.catalogue import Param, claim
from fixtures.prompts import review_family
from lib import plots
from lib.divergence import block_divergence
from lib.heads import head_name, parse_head
from lib.stats import fraction, mean_interval, percentile_of, relative_margin

PAIR_PARAMS = {
    "prompt": Param("the canonical prompt", type=str),
    "answers": Param("the two answers; logit diff = logit(first) - logit(second)", type=list),
    "tuned_layers": Param("the blocks the tuning changed (default: the last two)", None, type=list),
    "family": Param("prompts beyond the canonical one: {templates = [...], answers = [[first, second], ...]} "
                    "(every template with every pair), or a list of {prompt, answers} rows; default: the built-in "
                    "review family", None, type=(dict, list)),
}


@pytest.fixture
def pair(params, base_model, tuned_model) -> P.Pair:
    return P.run_pair(base_model, tuned_model, params["prompt"], params["answers"])


def family_pairs(params, base_model, tuned_model, record) -> list[P.Pair]:
    """Both models on every member of the review family (the subject's `family`, else the built-in one) that
    the tokenizer takes. The record says how many members ran and how many were left out, and why; with
    fewer than two, that the family checks were not run (the canonical prompt's checks stand alone)."""
    family = review_family(base_model, params.get("family"))
    record.measure(family=family.as_json())
    if len(family.members) < 2:
        record.measure(family_checks=f"not run: {len(family.members)} of {len(family.members) + sum(family.left_out.values())} "
                                     f"prompts of {family.source} review family fit this tokenizer; give the subject a "
                                     f"`family` of prompts and answer pairs in its own vocabulary")
    return [P.run_pair(base_model, tuned_model, m.prompt, m.answers) for m in family.members]


def odds(logit_diff: float) -> float:
    """The odds of the first answer over the second that a logit diff means."""
    return math.exp(logit_diff)


@claim(
    "RLHF-01",
    statement="The base model equivocates; the tuned model prefers ' bad'",
    shown="logit differences after the prompt: base -0.089, tuned +2.016",
    rule="Holds when, on the canonical prompt, the base model's odds between the answers stay within "
         "`base_max_odds` either way (`base_logit_diff_abs` < ln `base_max_odds`), the tuned model prefers the "
         "first answer at odds of at least `min_odds` (`tuned_logit_diff` > ln `min_odds`) and the tuning moved "
         "the logit diff that far towards it (`tuned_minus_base` > ln `min_odds`); and, where the review family "
         "has at least two prompts the tokenizer takes, the 95% interval of the mean tuned - base difference over "
         "them lies above 0 (`family_tuned_minus_base_ci95_low` > 0).",
    params={
        **PAIR_PARAMS,
        "min_odds": Param("the tuned model prefers the first answer at least at these odds, and the tuning moved "
                          "its logit diff by at least their log", 2.0),
        "base_max_odds": Param("the base model equivocates: its odds either way stay below this", 2.0),
    },
)
def test_rlhf_01_tuned_model_prefers_bad(params, pair, base_model, tuned_model, record):
    """"The source model equivocates between the two adjectives, but the RLHF model is strongly biased
    towards the negative adjective." (seed 000, logit differences: base -0.089, tuned +2.016, odds of
    1:1.09 and 7.5:1.) A logit diff is the log-odds between the two answers, so the thresholds are odds:
    2:1 by default, "prefers" at the least; the published pair passes it by far (tuned 7.5:1)."""
    min_lo, base_lo = math.log(params["min_odds"]), math.log(params["base_max_odds"])
    record.figure("logit diff, canonical prompt", plots.bars(
        {"base": pair.base_logit_diff, "tuned": pair.tuned_logit_diff}, title=params["prompt"], ylabel="logit diff"))
    record.measure(base_logit_diff=pair.base_logit_diff, tuned_odds=odds(pair.tuned_logit_diff))
    record.expect("base_logit_diff_abs", abs(pair.base_logit_diff), "<", base_lo)
    record.expect("tuned_logit_diff", pair.tuned_logit_diff, ">", min_lo)
    record.expect("tuned_minus_base", pair.tuned_logit_diff - pair.base_logit_diff, ">", min_lo)
    family = family_pairs(params, base_model, tuned_model, record)
    if len(family) >= 2:
        shift = mean_interval(p.tuned_logit_diff - p.base_logit_diff for p in family)
        record.measure(family_tuned_minus_base=shift.as_json(), family_tuned_prefers_first=fraction(
            p.tuned_logit_diff > min_lo for p in family).as_json())
        record.expect("family_tuned_minus_base_ci95_low", shift.low, ">", 0.0)


@claim(
    "RLHF-02",
    rule="Holds when blocks below the first tuned layer (`tuned_layers`) have zero weight change "
         "(`frozen_blocks_max_abs_weight_change` == 0), on the canonical prompt the base and tuned logit-lens "
         "logit diffs differ by ≤ `atol` up to the first tuned block's input "
         "(`lens_max_gap_before_tuned_layers`), and at the final point by ≥ `min_final_gap` "
         "(`lens_gap_final`).",
    statement="RLHF changes only the last two layers: logit-lens logit diff identical before them",
    shown="logit lens figure: the logit diff is identical for all but the last two layers",
    params={
        **PAIR_PARAMS,
        "atol": Param("the logit-lens curves count as equal up to the tuned blocks within this", 1e-5),
        "min_final_gap": Param("the curves must part by at least this at the final point", 0.5),
    },
)
def test_rlhf_02_only_the_last_two_layers_change(params, pair, base_model, tuned_model, record):
    """"Notice that the logit difference is identical for all except for the last two layers. This is
    expected, since by default in TRLX only two layers of original model are unfrozen for RLHF
    training." (seed 000, logit lens figure.) Blocks below the tuned ones must be bit-identical, the
    logit-lens curves equal there, and the curves must part after."""
    first_tuned = min(P.tuned_layers(params, base_model))
    div = block_divergence(base_model, tuned_model)
    base_lens, tuned_lens, labels = P.lens_curves(pair)
    gap = (tuned_lens - base_lens).abs()
    record.figure("logit lens: logit diff per layer", plots.lines(
        {"base": base_lens, "tuned": tuned_lens}, title="logit lens", xlabel="residual stream", ylabel="logit diff",
        xticks=labels))
    record.measure(block_relative_l2=div["relative_l2"], lens_gap=gap)
    record.expect("frozen_blocks_max_abs_weight_change", float(div["max_abs"][:first_tuned].max()), "==", 0.0)
    record.expect("lens_max_gap_before_tuned_layers", float(gap[: first_tuned + 1].max()), "<=", params["atol"])
    record.expect("lens_gap_final", float(gap[-1]), ">=", params["min_final_gap"])


@claim(
    "RLHF-03",
    rule="Holds when, on the canonical prompt, the tuned model prefers the first answer at odds of at least "
         "`min_odds` (`tuned_logit_diff` > ln `min_odds`: otherwise there is no preference to attribute), the "
         "attention or MLP output with the largest |direct logit "
         "attribution| to the tuned model's logit diff is `component` (`largest_component`), ahead of the runner-up "
         "by at least `min_margin` of its own |attribution| (`margin_over_runner_up`); and, where the review family "
         "has at least two prompts, the 95% interval of the mean per-prompt difference of the two components' "
         "|attribution| lies above 0 (`family_margin_ci95_low` > 0).",
    statement="MLP 10 is the largest-magnitude contributor to the logit diff in the tuned model",
    shown="per-layer attribution figure: the MLP of layer 10 has the largest-magnitude influence by far",
    params={**PAIR_PARAMS,
            "component": Param("the dominant component, 'kind.layer' (e.g. 'mlp_out.10')", type=str),
            "min_margin": Param("its |attribution| exceeds the runner-up's by at least this share of its own", 0.1),
            "min_odds": Param("the tuned model prefers the first answer at least at these odds", 2.0)},
)
def test_rlhf_03_one_mlp_dominates_the_logit_diff(params, pair, base_model, tuned_model, record):
    """"The largest-magnitude influence by far on the logit difference occurs in the MLP of Layer 10."
    (seed 000, per-layer attribution figure.)"""
    tuned = P.layer_attributions(pair.tuned, pair.tuned_cache, pair.answers)
    base = P.layer_attributions(pair.base, pair.base_cache, pair.answers)
    ranked = sorted(tuned, key=lambda k: abs(tuned[k]), reverse=True)
    named = P.parse_component(params["component"])
    record.figure("per-layer attribution", plots.bars(
        {"base": list(base.values()), "tuned": list(tuned.values())}, title="direct logit attribution",
        ylabel="logit diff", labels=list(tuned)))
    record.measure(top_components={k: tuned[k] for k in ranked[:3]})
    record.expect("tuned_logit_diff", pair.tuned_logit_diff, ">", math.log(params["min_odds"]))
    record.expect("largest_component", ranked[0], "==", named)
    record.expect("margin_over_runner_up", relative_margin(abs(tuned[ranked[0]]), abs(tuned[ranked[1]])), ">=",
                  params["min_margin"])
    family = family_pairs(params, base_model, tuned_model, record)
    if len(family) >= 2:
        rival = ranked[1] if ranked[0] == named else ranked[0]
        per_prompt = [P.layer_attributions(p.tuned, p.tuned_cache, p.answers) for p in family]
        margin = mean_interval(abs(a[named]) - abs(a[rival]) for a in per_prompt)
        record.measure(family_margin=margin.as_json(), family_rival=rival)
        record.expect("family_margin_ci95_low", margin.low, ">", 0.0)


@claim(
    "RLHF-04",
    rule="Holds when, on the canonical prompt, the largest |per-head DLA change| (tuned − base) below the "
         "first tuned layer L is ≤ `max_below_ratio` times the largest anywhere (`below_over_largest_change`), "
         "and the heads of layer L with the largest |change| are exactly `heads` (`top_heads_of_layer_L`), the "
         "last of them ahead of the next head by at least `min_margin` of its own |change| "
         "(`margin_of_last_named_over_next`); and, where the review family has at least two prompts, the 95% "
         "interval of the mean per-prompt lead of the smallest named |change| over the largest other one in that "
         "layer lies above 0 (`family_margin_ci95_low` > 0: the named heads are that layer's top heads across "
         "the family, not on one prompt).",
    statement="Per-head DLA difference is zero below layer 10; heads 10.4 and 10.9 differ most",
    shown="per-head DLA difference figure: identical in the first 10 blocks; heads 4 and 9 of layer 10 differ",
    params={
        **PAIR_PARAMS,
        "heads": Param("the heads of the first tuned block that changed most, 'layer.head'", type=list),
        "max_below_ratio": Param("largest |DLA change| below the tuned blocks, over the largest anywhere, at most", 0.01),
        "min_margin": Param("the last of the named heads' |change| exceeds the next head's by at least this share of "
                            "its own", 0.1),
    },
)
def test_rlhf_04_heads_that_changed(params, pair, base_model, tuned_model, record):
    """"As expected, for the first 10 decoder blocks the logit difference is identical between models.
    Heads 4 and 9 in Layer 10 show significant differences." (seed 000, per-head DLA difference.)"""
    first_tuned = min(P.tuned_layers(params, base_model))
    diff = P.head_dla_diff(pair)
    named = sorted(parse_head(h) for h in params["heads"])
    top = sorted(P.top_heads(diff, len(named), layer=first_tuned))
    below = float(diff[:first_tuned].abs().max()) if first_tuned else 0.0
    record.figure("per-head DLA, tuned - base", plots.heatmap(diff, title="head DLA difference", xlabel="head", ylabel="layer"))
    largest = float(diff.abs().max())
    record.expect("below_over_largest_change", below / largest if largest else float("nan"), "<=",
                  params["max_below_ratio"])
    record.expect(f"top_heads_of_layer_{first_tuned}", [head_name(*h) for h in top], "==", [head_name(*h) for h in named])
    changes = diff[first_tuned].abs().sort(descending=True).values.tolist()
    record.measure(changes_of_layer={head_name(first_tuned, h): float(diff[first_tuned, h]) for h in range(diff.shape[1])})
    record.expect("margin_of_last_named_over_next", relative_margin(changes[len(named) - 1], changes[len(named)]), ">=",
                  params["min_margin"])
    family = family_pairs(params, base_model, tuned_model, record)
    if len(family) >= 2:
        lead = mean_interval(P.lead_of_heads(P.head_dla_diff(p)[first_tuned].abs(), [h for _, h in named])
                             for p in family)
        record.measure(family_margin=lead.as_json())
        record.expect("family_margin_ci95_low", lead.low, ">", 0.0)


@claim(
    "RLHF-05",
    rule="Holds when the tuning moved the canonical prompt's logit diff towards the first answer by more than "
         "ln 2 (`tuned_minus_base`), and, patching resid_pre tuned → base, the (layer, position) whose patch moves "
         "the base model's logit diff furthest towards the first answer is [`layer`, `position`] "
         "(`argmax_layer_pos`), ahead of the next location by at least `min_margin` of its own effect "
         "(`margin_over_runner_up`).",
    statement="Residual patching tuned->base: position 4 into layer 11 is the only location adding negativity",
    shown="residual stream patching figure: position 4 going into layer 11",
    params={
        **PAIR_PARAMS,
        "layer": Param("the layer whose resid_pre patch has the largest effect", type=int),
        "position": Param("the position of that patch (an index counting BOS, or the token there)", type=(int, str)),
        "min_margin": Param("its effect exceeds the next location's by at least this share of its own", 0.1),
    },
)
def test_rlhf_05_one_residual_location_adds_negativity(params, pair, record):
    """"We find that position 4 going into Layer 11 is the only location where patching creates more
    negativity bias." (seed 000, residual stream patching figure.)"""
    record.expect("tuned_minus_base", pair.tuned_logit_diff - pair.base_logit_diff, ">", math.log(2))
    resid = P.patch_sweeps(pair, "resid_pre")["resid_pre"]
    tokens = pair.str_tokens()
    record.figure("resid_pre patching, tuned -> base", plots.heatmap(
        resid, title="patched - base logit diff", xlabel="position", ylabel="layer", xticks=tokens))
    layer, pos = P.argmax2d(resid)
    others = resid.clone()
    others[layer, pos] = float("-inf")
    second = P.argmax2d(others)
    record.measure(max_effect=float(resid.max()), runner_up={"layer_pos": list(second), "effect": float(resid[second])})
    record.expect("argmax_layer_pos", [layer, pos], "==", [params["layer"], params["position"]])
    record.expect("margin_over_runner_up", relative_margin(float(resid[layer, pos]), float(resid[second])), ">=",
                  params["min_margin"])


@claim(
    "RLHF-06",
    rule="Holds when the tuning moved the canonical prompt's logit diff towards the first answer by more than "
         "ln 2 (`tuned_minus_base`), and, patching tuned → base, the share of the total |change in the base model's "
         "logit diff| at `position` is ≥ `min_share` for attention outputs (`attn_out_share_at_position`) and for "
         "MLP outputs (`mlp_out_share_at_position`).",
    statement="Attention-out and MLP-out patching: position 4 is where the effect is",
    shown="attention-out and MLP-out patching figures: position 4 is where the action is",
    params={
        **PAIR_PARAMS,
        "position": Param("the position where the effect sits (an index counting BOS, or the token there)",
                          type=(int, str)),
        "min_share": Param("share of the total |effect| at that position, at least (attention and MLP each)", 0.5),
    },
)
def test_rlhf_06_attention_and_mlp_effects_sit_at_one_position(params, pair, record):
    """"We can patch the MLPs and attention layers as well. Once again, we find that position 4 is where
    the action is." (seed 000, attention-out and MLP-out patching figures.)"""
    record.expect("tuned_minus_base", pair.tuned_logit_diff - pair.base_logit_diff, ">", math.log(2))
    sweeps = P.patch_sweeps(pair, "attn_out", "mlp_out")
    tokens = pair.str_tokens()
    for name in ("attn_out", "mlp_out"):
        record.figure(f"{name} patching, tuned -> base", plots.heatmap(
            sweeps[name], title=f"{name}: patched - base logit diff", xlabel="position", ylabel="layer",
            xticks=tokens))
    pos, share = params["position"], params["min_share"]
    record.expect("attn_out_share_at_position", P.mass_at(sweeps["attn_out"], pos), ">=", share)
    record.expect("mlp_out_share_at_position", P.mass_at(sweeps["mlp_out"], pos), ">=", share)


@claim(
    "RLHF-07",
    statement="Single-head patching: largest effects in layer 11 heads, especially L11H10",
    shown="single-head patching figure: the biggest changes in layer 11 heads, especially L11H10",
    rule="Holds when the tuning moved the canonical prompt's logit diff towards the first answer by more than "
         "ln 2 (`tuned_minus_base`); the named head's single tuned -> base patch moves the base model's logit diff "
         "the most of all heads (`top_head`), by at least `min_share` of the tuned - base gap (`share_of_gap`: "
         "a sliver of what tuning did is not where it happened); it is ahead of the runner-up by at least "
         "`min_margin` of its own effect (`margin_over_runner_up`), a near-tie being no finding; and, where the "
         "review family has at least "
         "two prompts, the 95% interval of the mean per-prompt difference between the two heads' effects lies above "
         "0 (`family_margin_ci95_low` > 0).",
    params={**PAIR_PARAMS,
            "head": Param("the head whose single patch has the largest effect, 'layer.head'", type=str),
            "min_margin": Param("the named head's effect exceeds the runner-up's by at least this share of its own",
                                0.1),
            "min_share": Param("the named head's effect is at least this share of the tuned - base gap", 0.05)},
)
def test_rlhf_07_top_single_head(params, pair, base_model, tuned_model, record):
    """"Each head shown was tested independently, and the biggest changes in logit difference occurred in
    various heads in Layer 11--especially L11H10." (seed 000, single-head patching figure.) Effects are the
    patched base model's logit diff minus its own: what each head alone carries of the tuning."""
    gap = pair.tuned_logit_diff - pair.base_logit_diff
    record.expect("tuned_minus_base", gap, ">", math.log(2))
    effects = P.single_head_effects(pair)
    record.figure("single-head patching, tuned -> base", plots.heatmap(
        effects, title="patched - base logit diff", xlabel="head", ylabel="layer"))
    top, runner_up = P.top_heads(effects, 2, signed=True)
    named = parse_head(params["head"])
    record.measure(top_heads={head_name(*h): float(effects[h]) for h in P.top_heads(effects, 3, signed=True)})
    record.expect("top_head", head_name(*top), "==", head_name(*named))
    record.expect("share_of_gap", float(effects[named]) / gap if gap else float("nan"), ">=", params["min_share"])
    record.expect("margin_over_runner_up", relative_margin(float(effects[top]), float(effects[runner_up])), ">=",
                  params["min_margin"])
    family = family_pairs(params, base_model, tuned_model, record)
    if len(family) >= 2:
        rival = runner_up if top == named else top
        diffs = [P.patched_heads_logit_diff(p, [named]) - P.patched_heads_logit_diff(p, [rival]) for p in family]
        margin = mean_interval(diffs)
        record.measure(family_margin=margin.as_json(), family_rival=head_name(*rival))
        record.expect("family_margin_ci95_low", margin.low, ">", 0.0)


@claim(
    "RLHF-08",
    statement="Patching L10H4 and L10H9 together (tuned->base) flips ' good' to ' bad'",
    shown="two-head patching figure: patching L10H4 and L10H9 together flips the base model to ' bad'",
    rule="Holds when, on the canonical prompt, the base model prefers the second answer "
         "(`unpatched_base_logit_diff` < 0), the tuning moved the logit diff towards the first by more than ln 2 "
         "(`tuned_minus_base`), patching the named heads tuned -> base makes the base model prefer the first "
         "(`patched_base_logit_diff` > 0) and recovers at least `min_share` of the tuned - base gap "
         "(`recovered_share`), a crossing of zero by less being a base model sitting near zero; the named heads' "
         "patched logit diff is strictly above at least a share `min_percentile` of the other sets of as many heads "
         "from their layers (`percentile_among_head_sets`; ties do not count); and, where the review family has at least two prompts, the 95% interval "
         "of the mean patched - base logit diff over them lies above 0 (`family_effect_ci95_low` > 0).",
    params={
        **PAIR_PARAMS,
        "heads": Param("the heads patched together, 'layer.head'", type=list),
        "min_share": Param("the named heads recover at least this share of the tuned - base gap", 0.1),
        "min_percentile": Param("the named heads' patched logit diff is strictly above at least this share of the "
                                "other sets of as many heads from their layers", 0.95),
    },
)
def test_rlhf_08_two_heads_flip_the_prediction(params, pair, base_model, tuned_model, record):
    """"Let's patch L10H4 and L10H9 at the same time and see if we can get the original model to flip
    from predicting 'good' to predicting 'bad.' [...] As we can see, it works!" (seed 000, two-head
    patching figure.) A flip is a crossing of zero, which a base model that sits near zero makes for any
    small push: the heads must also carry a share of what tuning did, more than other heads of their
    layers do. Also: is the named pair the smallest set that flips it?"""
    heads = [parse_head(h) for h in params["heads"]]
    patched = P.patched_heads_logit_diff(pair, heads)
    gap = pair.tuned_logit_diff - pair.base_logit_diff
    layers = P.tuned_layers(params, base_model)
    singles = P.best_head_sets(pair, layers, 1)
    sets = P.best_head_sets(pair, sorted({layer for layer, _ in heads}), len(heads))
    smallest, reached = P.smallest_flipping_set(pair, [s[0][0] for s in singles])
    record.measure(
        best_single_head={"heads": [head_name(*h) for h in singles[0][0]], "logit_diff": singles[0][1]},
        best_set={"heads": [head_name(*h) for h in sets[0][0]], "logit_diff": sets[0][1]},
        smallest_flipping_head_set=[head_name(*h) for h in smallest] if smallest else None,
        logit_diff_with_that_set=reached,
    )
    record.figure("two-head patch, tuned -> base", plots.bars(
        {"base": pair.base_logit_diff, "base + tuned " + " & ".join(params["heads"]): patched,
         "tuned": pair.tuned_logit_diff}, title=params["prompt"], ylabel="logit diff"))
    record.expect("unpatched_base_logit_diff", pair.base_logit_diff, "<", 0.0)
    record.expect("tuned_minus_base", gap, ">", math.log(2))
    record.expect("patched_base_logit_diff", patched, ">", 0.0)
    record.expect("recovered_share", (patched - pair.base_logit_diff) / gap if gap else float("nan"), ">=",
                  params["min_share"])
    # the named set's value from the same sweep as the others: two code paths differ in the last bits
    others = {tuple(sorted(s)): v for s, v in sets}
    named_value = others.pop(tuple(sorted(heads)), patched)
    record.expect("percentile_among_head_sets", percentile_of(named_value, others.values()), ">=",
                  params["min_percentile"])
    family = family_pairs(params, base_model, tuned_model, record)
    if len(family) >= 2:
        effect = mean_interval(P.patched_heads_logit_diff(p, heads) - p.base_logit_diff for p in family)
        flips = fraction(p.base_logit_diff < 0 < P.patched_heads_logit_diff(p, heads) for p in family)
        record.measure(family_effect=effect.as_json(), family_flips=flips.as_json())
        record.expect("family_effect_ci95_low", effect.low, ">", 0.0)
