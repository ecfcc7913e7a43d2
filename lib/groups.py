"""Finite groups and their irreducible representations, found numerically from the regular representation.

Elements are indices 0..|G|-1 into a multiplication table `table[a, b] = a * b`. The irreps come from
splitting the left-regular representation L: a generic symmetric matrix averaged over the group,
M = sum_g L(g) H L(g)^T, commutes with every L(g), so each of its eigenspaces is invariant, and for a
group whose irreps are all real (as the symmetric groups') each eigenspace is one copy of one irrep.
Copies are told apart by their characters. Nothing here is typed in from a character table: the checks
(characters orthonormal, dimensions' squares summing to |G|) are measured."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


def symmetric_group(n: int) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """The permutations of n points (identity first) and their table: (a * b)(i) = a(b(i))."""
    elements = list(itertools.permutations(range(n)))
    index = {p: i for i, p in enumerate(elements)}
    table = np.array([[index[tuple(a[b[i]] for i in range(n))] for b in elements] for a in elements])
    return elements, table


def regular_representation(table: np.ndarray) -> np.ndarray:
    """L[g] [|G|, |G|]: the permutation matrix sending basis vector h to g * h."""
    n = len(table)
    rep = np.zeros((n, n, n))
    for g in range(n):
        rep[g, table[g], np.arange(n)] = 1.0
    return rep


@dataclass(frozen=True)
class Irrep:
    matrices: np.ndarray  # [|G|, d, d], orthogonal

    @property
    def dim(self) -> int:
        return self.matrices.shape[1]

    @property
    def character(self) -> np.ndarray:
        return np.trace(self.matrices, axis1=1, axis2=2)

    def entries(self) -> np.ndarray:
        """[|G|, d*d]: the matrix-entry functions c -> rho(c)_ij, the span an irrep contributes to."""
        return self.matrices.reshape(len(self.matrices), -1)


def irreps(table: np.ndarray, seed: int = 0, tol: float = 1e-6) -> list[Irrep]:
    """One real orthogonal representative of each irrep, smallest dimension first (trivial first)."""
    rep = regular_representation(table)
    rng = np.random.default_rng(seed)
    h = rng.standard_normal(rep.shape[1:])
    m = sum(r @ (h + h.T) @ r.T for r in rep)
    values, vectors = np.linalg.eigh(m)
    found: dict[tuple, Irrep] = {}
    start = 0
    while start < len(values):
        end = start + 1
        while end < len(values) and abs(values[end] - values[start]) < tol * max(1.0, abs(values[start])):
            end += 1
        basis = vectors[:, start:end]
        matrices = np.einsum("ki,gkl,lj->gij", basis, rep, basis)
        key = tuple(np.round(np.trace(matrices, axis1=1, axis2=2), 4))
        found.setdefault(key, Irrep(matrices))
        start = end
    return sorted(found.values(), key=lambda r: (r.dim, -r.character.sum()))


def character_orthonormality_error(reps: list[Irrep]) -> float:
    """max |<chi_i, chi_j> - delta_ij| with <chi, psi> = mean over the group of chi(g) psi(g)."""
    chars = np.stack([r.character for r in reps])
    gram = chars @ chars.T / chars.shape[1]
    return float(np.abs(gram - np.eye(len(reps))).max())


def is_homomorphism_error(rep: Irrep, table: np.ndarray) -> float:
    """max |rho(a) rho(b) - rho(a * b)| over all pairs."""
    m = rep.matrices
    return float(np.abs(np.einsum("aij,bjk->abik", m, m) - m[table]).max())
