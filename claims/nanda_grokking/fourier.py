"""Fourier analysis of modular addition (Nanda et al. 2023, "Progress measures for grokking via
mechanistic interpretability").

A model reads `a b =` and predicts c = (a + b) mod p. The numbers' embeddings are expanded in the
discrete Fourier basis over 0..p-1; the model's algorithm lives in a few key frequencies w, through
the logit directions cos(2 pi w (a + b) / p) and sin(2 pi w (a + b) / p) over the p x p input grid.
- restricted logits keep only those directions for the key frequencies (and each output's mean over
  the inputs): every other frequency is ablated;
- excluded logits remove exactly those directions and keep everything else.
Restricted loss is measured on the test pairs, excluded loss on the training pairs, as in the paper's
code; both ablations act on the logits, which are linear in the directions even where a final
LayerNorm stands between the neurons and the unembedding.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from lib.errors import SuiteError

Pairs = Int[Tensor, "n 2"]


class FourierError(SuiteError):
    """Frequencies, moduli or training logs that do not fit the Fourier analysis."""


# ---------------------------------------------------------------------------------------------
# The data: every (a, b) pair, the training split, the model's tokens


@dataclass(frozen=True)
class ModularTask:
    """Modular addition as one model sees it: p, the token ids of 0..p-1 and '=', the split."""

    p: int
    number_ids: Int[Tensor, " p"]
    eq_id: int
    train: Pairs
    test: Pairs

    @property
    def all_pairs(self) -> Pairs:
        a, b = torch.meshgrid(torch.arange(self.p), torch.arange(self.p), indexing="ij")
        return torch.stack([a.flatten(), b.flatten()], -1)

    def tokens(self, pairs: Pairs) -> Int[Tensor, "n 3"]:
        ids = self.number_ids[pairs]
        return torch.cat([ids, torch.full((len(pairs), 1), self.eq_id)], -1)


def number_ids(model, p: int, eq: str = "=") -> tuple[Int[Tensor, " p"], int]:
    """Token ids of the numbers '0'..'p-1' and of `eq` in the model's vocabulary."""
    tok = model.tokenizer
    words = [str(i) for i in range(p)] + [eq]
    ids = tok.convert_tokens_to_ids(words)
    missing = [w for w, i in zip(words, ids) if i is None or i == tok.unk_token_id]
    if missing:
        raise FourierError(f"the tokenizer has no single token for {missing[:5]}: modular addition needs one "
                           f"token per number 0..{p - 1} and one for {eq!r}; check `p` in the claim's parameters")
    return torch.tensor(ids[:-1]), int(ids[-1])


def training_split(checkpoint_dir: str | Path, log_name: str = "train_log.json") -> tuple[Pairs, Pairs]:
    """(train pairs, test pairs) as the training run recorded them in its log (the checkpoint's
    directory, or its parent for a `step-NNNNN` checkpoint)."""
    for d in (Path(checkpoint_dir), Path(checkpoint_dir).parent):
        path = d / log_name
        if path.is_file():
            log = json.loads(path.read_text())
            if "train_pairs" not in log or "test_pairs" not in log:
                raise FourierError(f"{path} has no 'train_pairs' / 'test_pairs': the split cannot be recovered; "
                                   f"write the pairs of each split into the training log")
            return torch.tensor(log["train_pairs"]), torch.tensor(log["test_pairs"])
    raise FourierError(f"no {log_name} beside {checkpoint_dir} or in its parent: the train/test split is needed for "
                       f"excluded loss and test accuracy; pass `training_log` in the claim's parameters")


def modular_task(model, p: int, log_name: str = "train_log.json") -> ModularTask:
    ids, eq = number_ids(model, p)
    train, test = training_split(model.checkpoint.path, log_name)
    if train.numel() and int(train.max()) >= p or test.numel() and int(test.max()) >= p:
        raise FourierError(f"the training log's pairs go beyond p = {p}: check `p` in the claim's parameters")
    return ModularTask(p, ids, eq, train, test)


# ---------------------------------------------------------------------------------------------
# The embedding's Fourier spectrum


def check_frequencies(freqs: Iterable[int], p: int) -> list[int]:
    freqs = [int(f) for f in freqs]
    bad = [f for f in freqs if not 1 <= f <= p // 2]
    if bad or len(set(freqs)) != len(freqs):
        raise FourierError(f"frequencies {freqs} must be distinct integers in 1..{p // 2} (p = {p})")
    return freqs


def power_spectrum(embed: Float[Tensor, "p d"]) -> Float[Tensor, " freq"]:
    """Power per frequency 1..p//2 of the embedding over the inputs 0..p-1 (constant term removed)."""
    spectrum = torch.fft.rfft(embed.double() - embed.double().mean(0), dim=0).abs().pow(2).sum(-1)
    return spectrum[1:].float()


def power_share(power: Float[Tensor, " freq"], freqs: Sequence[int]) -> float:
    """Share of the total power held by `freqs` (1-based frequencies)."""
    return float(power[[f - 1 for f in freqs]].sum() / power.sum())


def top_frequencies(power: Float[Tensor, " freq"], k: int) -> list[int]:
    return sorted(int(i) + 1 for i in torch.argsort(power, descending=True)[:k])


def number_embeddings(model, task: ModularTask) -> Float[Tensor, "p d_model"]:
    return model.W_E.detach()[task.number_ids]


# ---------------------------------------------------------------------------------------------
# Logits in the Fourier basis over (a, b)


def sum_directions(p: int, freqs: Sequence[int]) -> Float[Tensor, "p*p 2k"]:
    """Orthonormal cos(w(a+b)), sin(w(a+b)) directions over the p x p grid (a-major), one pair per w."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    angle = 2 * torch.pi * (a + b).flatten().double() / p
    cols = [f(w * angle) for w in check_frequencies(freqs, p) for f in (torch.cos, torch.sin)]
    if not cols:
        return torch.zeros(p * p, 0, dtype=torch.float64)
    return torch.nn.functional.normalize(torch.stack(cols, -1), dim=0)


def frequency_components(logits: Float[Tensor, "p*p c"], p: int, freqs: Sequence[int]) -> Float[Tensor, "p*p c"]:
    """The part of the logits (over the full a-major grid of inputs) along the key directions."""
    u = sum_directions(p, freqs).to(logits.device)
    return (u @ (u.T @ logits.double())).to(logits.dtype)


def restricted_logits(logits: Float[Tensor, "p*p c"], p: int, freqs: Sequence[int]) -> Float[Tensor, "p*p c"]:
    """Every frequency but `freqs` ablated: each output's mean over the inputs plus the key directions."""
    return logits.mean(0, keepdim=True) + frequency_components(logits - logits.mean(0, keepdim=True), p, freqs)


def excluded_logits(logits: Float[Tensor, "p*p c"], p: int, freqs: Sequence[int]) -> Float[Tensor, "p*p c"]:
    """The key frequencies' directions removed, everything else kept."""
    return logits - frequency_components(logits, p, freqs)


@torch.no_grad()
def grid_logits(model, task: ModularTask) -> Float[Tensor, "p*p p"]:
    """Final-position logits over the numbers for every (a, b), a-major."""
    logits = model(task.tokens(task.all_pairs))[:, -1]
    return logits[:, task.number_ids].float()


def _rows(task: ModularTask, pairs: Pairs) -> Int[Tensor, " n"]:
    return pairs[:, 0] * task.p + pairs[:, 1]


def loss_acc(logits: Float[Tensor, "p*p p"], task: ModularTask, pairs: Pairs) -> tuple[float, float]:
    """Cross-entropy and accuracy of grid logits on `pairs` (labels (a + b) mod p)."""
    pairs = pairs.to(logits.device)
    rows = logits[_rows(task, pairs)]
    labels = pairs.sum(-1) % task.p
    return float(F.cross_entropy(rows, labels)), float((rows.argmax(-1) == labels).float().mean())


# ---------------------------------------------------------------------------------------------
# Progress measures over checkpoints


@dataclass(frozen=True)
class Progress:
    """Nanda et al.'s progress measures at one checkpoint."""

    step: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    restricted_loss: float
    excluded_loss: float
    weight_norm: float  # sum of squared parameters


def weight_norm(model) -> float:
    return float(sum(p.detach().double().pow(2).sum() for p in model.parameters()))


def progress(model, task: ModularTask, freqs: Sequence[int], step: int) -> Progress:
    logits = grid_logits(model, task)
    train_loss, train_acc = loss_acc(logits, task, task.train)
    test_loss, test_acc = loss_acc(logits, task, task.test)
    restricted, _ = loss_acc(restricted_logits(logits, task.p, freqs), task, task.test)
    excluded, _ = loss_acc(excluded_logits(logits, task.p, freqs), task, task.train)
    return Progress(step, train_loss, train_acc, test_loss, test_acc, restricted, excluded, weight_norm(model))


def progress_curve(load: Callable[[int], object], steps: Sequence[int], p: int, freqs: Sequence[int],
                   log_name: str = "train_log.json") -> list[Progress]:
    """Progress measures at every checkpoint; `load(step)` returns the model saved at `step`."""
    out = []
    for step in steps:
        model = load(step)
        out.append(progress(model, modular_task(model, p, log_name), freqs, step))
    return out


# ---------------------------------------------------------------------------------------------
# The three phases of grokking


@dataclass(frozen=True)
class Phases:
    """Phase boundaries found on a progress curve, and the signature of each phase.

    Memorisation ends at the first checkpoint whose training accuracy reaches `fit_acc`. Cleanup begins
    at the start of the sharpest fall in test loss after that (the grokking cliff). Circuit formation
    lies between. Each phase's signature, after Nanda et al. section 5:
    - memorisation: the model fits the training pairs far better than unseen ones
      (`memorisation_gap` = test loss - train loss at its end);
    - circuit formation: restricted loss falls (`restricted_drop` > 0) and the key frequencies carry
      more of the training fit: excluded loss rises against train loss (`excluded_rise` > 0);
    - cleanup: test loss closes on restricted loss as the memorising components go
      (`cleanup_gap_ratio` = (test - restricted) at the end / at the start of cleanup; NaN, which fails any
      comparison, where the start gap is not positive: there is then nothing to close).
    """

    memorised: int | None
    cleanup: int | None
    memorisation_gap: float = float("nan")
    restricted_drop: float = float("nan")
    excluded_rise: float = float("nan")
    cleanup_gap_ratio: float = float("nan")
    final_test_acc: float = float("nan")
    weight_norm_change_in_cleanup: float = float("nan")

    def as_json(self) -> dict:
        return dict(self.__dict__)


def grokking_phases(curve: Sequence[Progress], fit_acc: float = 0.99) -> Phases:
    from lib.curves import jump

    steps = [c.step for c in curve]
    if steps != sorted(set(steps)):
        raise FourierError(f"checkpoint steps must increase strictly; got {steps}")
    m = next((i for i, c in enumerate(curve) if c.train_acc >= fit_acc), None)
    if m is None or m > len(curve) - 2:
        return Phases(None if m is None else steps[m], None)
    after = curve[m:]
    cliff = jump([c.step for c in after], [c.test_loss for c in after], "fall")
    c = steps.index(cliff.before)
    mem, start, end = curve[m], curve[c], curve[-1]
    start_gap = start.test_loss - start.restricted_loss
    return Phases(
        memorised=mem.step,
        cleanup=start.step,
        memorisation_gap=mem.test_loss - mem.train_loss,
        restricted_drop=mem.restricted_loss - start.restricted_loss,
        excluded_rise=(start.excluded_loss - start.train_loss) - (mem.excluded_loss - mem.train_loss),
        cleanup_gap_ratio=(end.test_loss - end.restricted_loss) / start_gap if start_gap > 0 else float("nan"),
        final_test_acc=end.test_acc,
        weight_norm_change_in_cleanup=end.weight_norm - start.weight_norm,
    )


# ---------------------------------------------------------------------------------------------
# The paper's figures


def spectrum_figure(power: Float[Tensor, " freq"], freqs: Sequence[int], label: str = "the claimed key frequencies"):
    """Share of the embedding's power at each frequency, `freqs` highlighted."""
    import matplotlib.pyplot as plt

    share = (power / power.sum()).numpy()
    x = range(1, len(share) + 1)
    colours = ["#c44e52" if f in set(freqs) else "#8c8c8c" for f in x]
    fig, ax = plt.subplots(figsize=(7.2, 3.4))
    ax.bar(x, share, color=colours)
    ax.set(xlabel="frequency w (cos/sin of 2 pi w x / p)", ylabel="share of embedding power",
           title=f"number embeddings in the Fourier basis ({label} in red: "
                 f"{power_share(power, freqs):.0%} of the power)")
    fig.tight_layout()
    return fig


def progress_figure(curve: Sequence[Progress], phases: Phases):
    """Train, test, restricted and excluded loss (log scale) and the weight norm, with the phase boundaries."""
    import matplotlib.pyplot as plt

    steps = [c.step for c in curve]
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    for name, colour in (("train_loss", "#4c72b0"), ("test_loss", "#c44e52"),
                         ("restricted_loss", "#55a868"), ("excluded_loss", "#8172b2")):
        ax.plot(steps, [getattr(c, name) for c in curve], marker="o", ms=3, color=colour,
                label=name.replace("_", " "))
    ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel="cross-entropy loss", title="progress measures over training")
    ax2 = ax.twinx()
    ax2.plot(steps, [c.weight_norm for c in curve], color="black", lw=1, ls=":", label="sum of squared weights")
    ax2.set_ylabel("sum of squared weights")
    bounds = [b for b in (phases.memorised, phases.cleanup) if b is not None]
    edges = [steps[0], *bounds, steps[-1]]
    for b in bounds:
        ax.axvline(b, color="grey", ls="--", lw=0.8)
    for (lo, hi), name in zip(pairwise(edges), ("memorisation", "circuit formation", "cleanup")):
        ax.text((lo + hi) / 2, 0.02, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
    fig.tight_layout()
    return fig
