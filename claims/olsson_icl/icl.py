"""In-context learning and induction heads over training (Olsson et al. 2022, "In-context Learning and
Induction Heads").

The in-context-learning score is the loss at a late token minus the loss at an early token of the
same sequences (Olsson et al. use the 500th and the 50th token): it turns negative as the model learns
to use its context. The induction score of a head is its mean attention from each token of a repeated
random sequence to the token after that token's first occurrence. Both are measured at every saved
checkpoint; a jump is the largest change between two consecutive checkpoints.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lib.curves import CurveError, Jump
from lib.heads import head_name, induction_stripe_scores
from lib.sequences import ordinary_tokens, repeated_random_tokens, repeated_segment, with_bos

# ---------------------------------------------------------------------------------------------
# Held-out sequences


def repeated_segments(model, n: int, length: int, shortest: int, longest: int,
                      seed: int = 0) -> Int[Tensor, "n pos"]:
    """[BOS] + a segment of `shortest`..`longest` distinct random ordinary tokens, repeated to `length` tokens
    (lib.sequences.repeated_segment, the same generator the zoo's attention-only model trains on)."""
    vocab = ordinary_tokens(model).tolist()
    if not 1 <= shortest <= longest <= len(vocab):
        raise CurveError(f"segment lengths {shortest}..{longest} must lie in 1..{len(vocab)} (the ordinary vocabulary)")
    rng = random.Random(seed)
    rows = [repeated_segment(rng, vocab, length, shortest, longest) for _ in range(n)]
    return with_bos(model, torch.tensor(rows))


HELD_OUT_KEYS = ("n", "length", "shortest", "longest")


def held_out(model, data: dict, seed: int = 0) -> Int[Tensor, "n pos"]:
    """`repeated_segments` as `data` describes them: n, length, shortest, longest (and optionally seed)."""
    missing = [k for k in HELD_OUT_KEYS if k not in data]
    if missing:
        raise CurveError(f"held-out sequences need {missing} in the claim's `icl_data` (it has {sorted(data)})")
    return repeated_segments(model, data["n"], data["length"], data["shortest"], data["longest"], data.get("seed", seed))


# ---------------------------------------------------------------------------------------------
# Scores at one checkpoint


@torch.no_grad()
def sequence_losses(model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos"]:
    """Loss of predicting the token at each position of each sequence (position 0 is never predicted: NaN)."""
    logp = model(tokens).log_softmax(-1).float()
    tokens = tokens.to(logp.device)
    nll = -logp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    return torch.cat([torch.full((len(tokens), 1), float("nan"), device=logp.device), nll], 1)


def token_losses(model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, " pos"]:
    """Mean loss of predicting the token at each position (position 0: NaN)."""
    return sequence_losses(model, tokens).mean(0)


def icl_scores(losses: Float[Tensor, "*batch pos"], early: Sequence[int], late: Sequence[int]) -> Float[Tensor, "*batch"]:
    """Mean loss over the late token positions minus the mean over the early ones (inclusive ranges)."""
    n = losses.shape[-1]
    for name, (lo, hi) in (("early", early), ("late", late)):
        if not 1 <= lo <= hi < n:
            raise CurveError(f"{name} tokens {lo}..{hi} must lie within 1..{n - 1} (the sequence has {n} positions)")
    return losses[..., late[0] : late[1] + 1].mean(-1) - losses[..., early[0] : early[1] + 1].mean(-1)


def icl_score(losses: Float[Tensor, " pos"], early: Sequence[int], late: Sequence[int]) -> float:
    return float(icl_scores(losses, early, late))


def induction_scores(model, half: int, batch: int = 32, seed: int = 0) -> Float[Tensor, "layer head"]:
    """Every head's induction score on [BOS] + r + r, r random of length `half`."""
    return induction_stripe_scores(model, repeated_random_tokens(model, half, batch, seed), half)


# ---------------------------------------------------------------------------------------------
# Curves over checkpoints


@dataclass(frozen=True)
class Dynamics:
    """ICL score and best induction score at each saved step."""

    steps: list[int]
    icl: list[float]
    induction: list[float]
    induction_head: list[str]  # the best head at each step


def dynamics(load: Callable[[int], object], steps: Sequence[int], *, data: dict, early: Sequence[int],
             late: Sequence[int], probe_half: int, probe_batch: int = 32, seed: int = 0) -> Dynamics:
    """Scores at every checkpoint; `load(step)` returns the model saved at `step`. `data` holds the
    held-out sequences' n, length, shortest, longest (and optionally seed)."""
    if len(steps) < 2:
        raise CurveError(f"a curve needs at least two checkpoints; got steps {list(steps)}")
    icl, best, heads = [], [], []
    for step in steps:
        model = load(step)
        icl.append(icl_score(token_losses(model, held_out(model, data, seed)), early, late))
        scores = induction_scores(model, probe_half, probe_batch, seed)
        layer, head = divmod(int(scores.argmax()), scores.shape[1])
        best.append(float(scores.max()))
        heads.append(head_name(layer, head))
    return Dynamics(list(steps), icl, best, heads)


def change_per_sequence(load: Callable[[int], object], before: int, after: int, *, data: dict,
                        early: Sequence[int], late: Sequence[int], seed: int = 0) -> Float[Tensor, " n"]:
    """Each held-out sequence's ICL score at step `after` minus at step `before`."""
    scores = []
    for step in (before, after):
        model = load(step)
        scores.append(icl_scores(sequence_losses(model, held_out(model, data, seed)), early, late))
    return scores[1] - scores[0]


# ---------------------------------------------------------------------------------------------
# The paper's figure


def dynamics_figure(d: Dynamics, icl_jump: Jump, induction_jump: Jump):
    """ICL score and best induction score against training step, each jump shaded."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    ax.plot(d.steps, d.icl, marker="o", ms=3, color="#c44e52", label="in-context learning score (nats)")
    ax.set(xlabel="training step", ylabel="ICL score: late-token loss - early-token loss (nats)",
           title="in-context learning and induction heads over training")
    ax2 = ax.twinx()
    ax2.plot(d.steps, d.induction, marker="s", ms=3, color="#4c72b0", label="best induction score")
    ax2.set_ylabel("best head's induction score")
    ax2.set_ylim(0, 1)
    for j, colour, name in ((icl_jump, "#c44e52", "ICL"), (induction_jump, "#4c72b0", "induction")):
        ax.axvspan(j.before, j.step, color=colour, alpha=0.12)
        ax.axvline(j.step, color=colour, ls="--", lw=1, label=f"{name} jump {j.before}->{j.step}")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center right")
    fig.tight_layout()
    return fig
