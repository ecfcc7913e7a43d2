"""Claims of Olsson et al. 2022, "In-context Learning and Induction Heads" (seed 003, arXiv:2209.11895):
induction heads form at the same point in training as a sharp rise in in-context learning.

Claims over training read a series of checkpoints: the subject's `checkpoint_ref` formatted with each
of its `checkpoint_steps`."""
from claims.olsson_icl import icl as ICL
from fixtures.catalogue import Param, claim
from lib.curves import jump
from lib.stats import fraction


@claim(
    "ICL-01",
    rule="Holds when, across consecutive checkpoints, the largest fall of the ICL score (late- minus "
         "early-token loss on held-out sequences) is ≥ `min_icl_jump` nats (`icl_jump_size`), the largest rise "
         "of the best head's induction score is ≥ `min_induction_jump` (`induction_jump_size`), and the two "
         "jumps end at most `window` steps apart (`jump_steps_apart`).",
    statement="Induction heads form with a sharp rise in in-context learning",
    shown="the phase change of Figure 1 and Argument 1: induction heads develop at precisely the point of a "
          "sudden sharp increase in in-context learning, visible as a bump in the training loss",
    params={
        "checkpoint_ref": Param("the checkpoint at each step: a reference with a {step} field", type=str),
        "checkpoint_steps": Param("the training steps of the checkpoints read, in order", type=list),
        "icl_data": Param("the held-out sequences: n, length, shortest and longest segment, seed", type=dict),
        "early_tokens": Param("[first, last] token positions whose mean loss is the early loss (<bos> is 0)", type=list),
        "late_tokens": Param("[first, last] token positions whose mean loss is the late loss", type=list),
        "probe_half": Param("length of the repeated random half of the induction-score probe", type=int),
        "min_icl_jump": Param("the ICL score's largest fall between checkpoints is at least this (nats)", type=float),
        "min_induction_jump": Param("the best induction score's largest rise between checkpoints is at least this",
                                    type=float),
        "window": Param("the two jumps end at most this many steps apart", type=int),
    },
)
def test_icl_01_induction_heads_form_with_in_context_learning(subject, params, model_store, record):
    """"We find that induction heads develop at precisely the same point as a sudden sharp increase in
    in-context learning ability, visible as a bump in the training loss." (seed 003, Olsson et al. 2022,
    arXiv:2209.11895; the phase change of their Figure 1 and Argument 1.) At every checkpoint: the ICL
    score (mean loss at `late_tokens` minus at `early_tokens` of held-out sequences) and the best head's
    induction score. Each curve jumps: its largest change between consecutive checkpoints is at least
    `min_icl_jump` nats (fall) and `min_induction_jump` (rise); the two jumps end within `window` steps of
    each other (one checkpoint interval: "precisely the same point"). Over the held-out sequences: the
    share whose own ICL score falls by `min_icl_jump` across the jump.

    On attn-only-2l the training text is itself repeated random segments, so the ICL score is measured on
    held-out sequences of that text; Olsson et al. measure it on ordinary training text, where repeats are
    only one of the things the context offers."""
    d = ICL.dynamics(model_store.series(params["checkpoint_ref"]), params["checkpoint_steps"], data=params["icl_data"],
                     early=params["early_tokens"], late=params["late_tokens"], probe_half=params["probe_half"])
    icl_jump, ind_jump = jump(d.steps, d.icl, "fall"), jump(d.steps, d.induction, "rise")
    record.figure("ICL score and best induction score over training", ICL.dynamics_figure(d, icl_jump, ind_jump))
    record.table("scores per checkpoint", ["step", "ICL score (nats)", "best induction score", "best head"],
                 [list(row) for row in zip(d.steps, d.icl, d.induction, d.induction_head)])
    record.measure(icl_jump=icl_jump.as_json(), induction_jump=ind_jump.as_json(),
                   jump_steps_apart=abs(icl_jump.step - ind_jump.step),
                   icl_score_first_last=[d.icl[0], d.icl[-1]], induction_score_first_last=[d.induction[0], d.induction[-1]])
    change = ICL.change_per_sequence(model_store.series(params["checkpoint_ref"]), icl_jump.before, icl_jump.step, data=params["icl_data"],
                                     early=params["early_tokens"], late=params["late_tokens"])
    record.measure(sequences_whose_icl_score_falls_by_min_jump=fraction(change <= -params["min_icl_jump"]).as_json())
    record.expect("icl_jump_size", icl_jump.size, ">=", params["min_icl_jump"])
    record.expect("induction_jump_size", ind_jump.size, ">=", params["min_induction_jump"])
    record.expect("jump_steps_apart", abs(icl_jump.step - ind_jump.step), "<=", params["window"])
