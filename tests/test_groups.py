"""Irreducible representations found numerically, checked against what is known independently of them:
the sign of a permutation, the standard representation's character (fixed points - 1), Schur's and
Peter-Weyl's orthogonality; and the split of a logit table into one part per irrep."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claims.chughtai_groups import universality as U
from lib import groups


def parity(p: tuple[int, ...]) -> int:
    inversions = sum(p[i] > p[j] for i in range(len(p)) for j in range(i + 1, len(p)))
    return -1 if inversions % 2 else 1


@pytest.mark.parametrize("n, dims", [(3, [1, 1, 2]), (4, [1, 1, 2, 3, 3])])
def test_symmetric_group_irreps(n, dims):
    elements, table = groups.symmetric_group(n)
    reps = groups.irreps(table)
    assert [r.dim for r in reps] == dims and sum(d * d for d in dims) == len(elements)
    assert groups.character_orthonormality_error(reps) < 1e-9
    assert max(groups.is_homomorphism_error(r, table) for r in reps) < 1e-9
    characters = {tuple(np.round(r.character).astype(int)) for r in reps}
    assert tuple(parity(p) for p in elements) in characters  # the sign representation
    standard = tuple(sum(p[i] == i for i in range(n)) - 1 for p in elements)
    assert standard in characters  # the standard representation: fixed points - 1


def test_table_is_composition():
    elements, table = groups.symmetric_group(4)
    for a in (3, 7, 20):
        for b in (1, 11, 23):
            assert elements[table[a, b]] == tuple(elements[a][elements[b][i]] for i in range(4))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_logits_split_into_one_part_per_irrep(seed):
    """Peter-Weyl: the irreps' shares of any logit table sum to one; keeping every irrep changes nothing,
    removing every irrep leaves only each row's mean."""
    _, table = groups.symmetric_group(4)
    reps = groups.irreps(table)[1:]
    logits = np.random.default_rng(seed).standard_normal((30, 24))
    assert sum(U.irrep_shares(logits, reps)) == pytest.approx(1.0)
    assert np.allclose(U.keep_only(logits, reps), logits)
    assert np.allclose(U.ablate(logits, reps), logits.mean(1, keepdims=True))


def test_a_logit_table_built_from_one_irrep_is_all_that_irrep():
    """tr(rho(a) rho(b) rho(c)^T), the paper's logit for one irrep, lies in that irrep's span alone and
    answers a * b."""
    _, table = groups.symmetric_group(4)
    reps = groups.irreps(table)[1:]
    rho = reps[-1].matrices
    logits = np.einsum("aij,bjk,cik->abc", rho, rho, rho).reshape(24 * 24, 24)
    shares = U.irrep_shares(logits, reps)
    assert shares[-1] == pytest.approx(1.0) and max(shares[:-1]) < 1e-9
    task = U.GroupTask([str(i) for i in range(24)], table, [], [(a, b) for a in range(24) for b in range(24)])
    assert U.accuracy(logits, task, task.test) == 1.0
