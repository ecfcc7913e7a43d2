"""The parameters of the seed-000 claims, found on a pair's discovery prompts: the component, heads,
layer and position each claim names, chosen by their mean over those prompts, with how far the choice
leads the runner-up (`lib.stats.choose`). Positions are counted from the end of each prompt, which
family prompts of different lengths share, and written as positions of the canonical prompt."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from claims.tigges_rlhf import pair as P
from fixtures.discover import Found, Pick
from fixtures.prompts import ReviewPrompt
from lib.heads import head_name
from lib.prompts import to_tokens
from lib.stats import choose


def component_name(label: str) -> str:
    """'10_mlp_out' -> 'mlp_out.10' (the inverse of `pair.parse_component`)."""
    layer, _, kind = label.partition("_")
    return f"{kind}.{int(layer)}"


def discover(base, tuned, params: dict, members: Sequence[ReviewPrompt]) -> dict[str, Found]:
    """RLHF-03..08's parameters on `members` (each a prompt with its answers)."""
    pairs = [P.run_pair(base, tuned, m.prompt, m.answers) for m in members]
    n_canon = to_tokens(base, params["prompt"]).shape[1]
    layers = P.tuned_layers(params, base)
    found = {}

    attributions = [{k: abs(v) for k, v in P.layer_attributions(p.tuned, p.tuned_cache, p.answers).items()}
                    for p in pairs]
    c = choose(attributions)
    found["RLHF-03"] = Found({"component": Pick(component_name(c.chosen[0]), c, component_name(c.runner_up),
                                                "the largest mean |direct logit attribution| to the tuned logit diff")})

    first = min(layers)
    changes = [{head_name(first, h): float(d) for h, d in enumerate(P.head_dla_diff(p)[first].abs())} for p in pairs]
    c = choose(changes, k=2)
    found["RLHF-04"] = Found({"heads": Pick(sorted(c.chosen), c, c.runner_up,
                                            f"the two largest mean |per-head DLA change| in layer {first}")})

    # positions from the end: -1 is every prompt's last token
    shortest = min(n_canon, *(p.tokens.shape[1] for p in pairs))
    resid = []
    for p in pairs:
        sweep, n = P.patch_sweeps(p, "resid_pre")["resid_pre"], p.tokens.shape[1]
        resid.append({(layer, off): float(sweep[layer, n + off]) for layer in range(sweep.shape[0])
                      for off in range(-shortest, 0)})
    c = choose(resid)
    (layer, off), (r_layer, r_off) = c.chosen[0], c.runner_up
    rule = "the resid_pre patch (tuned -> base) that moves the logit diff furthest towards the first answer"
    runner = f"layer {r_layer}, position {n_canon + r_off}"
    found["RLHF-05"] = Found({"layer": Pick(layer, c, runner, rule), "position": Pick(n_canon + off, c, runner, rule)})

    shares = []
    for p in pairs:
        sweeps, n = P.patch_sweeps(p, "attn_out", "mlp_out"), p.tokens.shape[1]
        shares.append({off: min(P.mass_at(sweeps["attn_out"], n + off), P.mass_at(sweeps["mlp_out"], n + off))
                       for off in range(-shortest, 0)})
    c = choose(shares)
    found["RLHF-06"] = Found({"position": Pick(n_canon + c.chosen[0], c, f"position {n_canon + c.runner_up}",
                                               "the position with the largest share of both the attention and the "
                                               "MLP patching effects")})

    effects = [{head_name(layer, h): float(e) for (layer, h), e in np.ndenumerate(P.single_head_effects(p).numpy())}
               for p in pairs]
    c = choose(effects)
    found["RLHF-07"] = Found({"head": Pick(c.chosen[0], c, c.runner_up, "the largest mean single-head patch effect "
                                                                          "(tuned -> base) towards the first answer")})

    sets = [{tuple(head_name(*h) for h in s): v for s, v in P.best_head_sets(p, layers, 2)} for p in pairs]
    c = choose(sets)
    found["RLHF-08"] = Found({"heads": Pick(list(c.chosen[0]), c, " & ".join(c.runner_up),
                                            f"the best mean patched logit diff among the pairs of heads in layers {layers}")})
    return found
