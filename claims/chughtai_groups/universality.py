"""Representation-theoretic analysis of networks trained on group composition (Chughtai et al. 2023).

A network that composes a and b in a group G through the irreducible representation rho makes its logit
for the answer c a function of c in the span of rho's matrix entries c -> rho(c)_ij (the logit is
tr(rho(a) rho(b) rho(c)^-1) up to scale). By Peter-Weyl the spans of the irreps' entries are orthogonal
and together hold every function on G, so the logits over c split exactly into one part per irrep: its
share of the logit variance says how much of the computation runs through it. Ablating an irrep removes
its part; keeping only some irreps removes the others'. The constant part (the trivial irrep) never moves
a softmax and is left out of the shares."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lib.groups import Irrep


@dataclass(frozen=True, eq=False)
class GroupTask:
    elements: list[str]  # token of each element
    table: np.ndarray  # [|G|, |G|]: the answer the model was trained on for (a, b)
    train: list[tuple[int, int]]
    test: list[tuple[int, int]]

    @classmethod
    def from_log(cls, path: Path) -> GroupTask:
        log = json.loads(path.read_text())
        return cls(log["elements"], np.array(log["table"]), [tuple(p) for p in log["train_pairs"]],
                   [tuple(p) for p in log["test_pairs"]])


@torch.no_grad()
def group_logits(model, elements: list[str]) -> np.ndarray:
    """[|G| * |G|, |G|]: for every pair (a, b), a-major, the logits of every element after "a b =" ."""
    ids = [model.tokenizer.convert_tokens_to_ids(e) for e in elements]
    eq = model.tokenizer.convert_tokens_to_ids("=")
    tokens = torch.tensor([[a, b, eq] for a in ids for b in ids])
    return model(tokens)[:, -1][:, ids].double().cpu().numpy()


def projector(reps: list[Irrep], n: int) -> np.ndarray:
    """[n, n]: the orthogonal projection onto the span of the irreps' matrix entries (n = |G|)."""
    if not reps:
        return np.zeros((n, n))
    e = np.concatenate([r.entries() for r in reps], axis=1)
    return e @ np.linalg.pinv(e)


def irrep_shares(logits: np.ndarray, reps: list[Irrep]) -> list[float]:
    """Each irrep's share of the variance of the logits over the answer (each row centred)."""
    centred = logits - logits.mean(1, keepdims=True)
    total = float((centred ** 2).sum())
    return [float(((centred @ projector([r], logits.shape[1]).T) ** 2).sum()) / total for r in reps]


def accuracy(logits: np.ndarray, task: GroupTask, pairs: list[tuple[int, int]]) -> float:
    n = len(task.elements)
    rows = [a * n + b for a, b in pairs]
    return float(np.mean(logits[rows].argmax(1) == task.table[tuple(np.array(pairs).T)]))


def keep_only(logits: np.ndarray, reps: list[Irrep]) -> np.ndarray:
    """The logits with every irrep but `reps` (and the constant) removed."""
    mean = logits.mean(1, keepdims=True)
    return mean + (logits - mean) @ projector(reps, logits.shape[1]).T


def ablate(logits: np.ndarray, reps: list[Irrep]) -> np.ndarray:
    """The logits with the parts along `reps` removed."""
    return logits - (logits - logits.mean(1, keepdims=True)) @ projector(reps, logits.shape[1]).T


def irrep_label(rep: Irrep, index: int) -> str:
    """A name for an irrep that its dimension and character identify: 'dim 3 (#4)'."""
    return f"dim {rep.dim} (#{index})"
