"""Full residual-stream (layer x position) and head-by-position sweeps: lib.patching against
transformer_lens.patching, same numbers checked inside each benchmark.

The reference head-by-position sweep runs one full forward pass per cell (1,728 at 12 layers x 12
positions x 12 heads, minutes on one CPU thread). Every cell costs the reference the same forward pass, so
by default it runs a fixed random 1/12 of the cells and its time is scaled by 12 (recorded in extra_info);
BENCH_FULL_REFERENCE=1 runs the whole grid.
"""
from __future__ import annotations

import os

import pytest
import torch
import transformer_lens.patching as tlp

from lib import patching as P
from lib.metrics import logit_diff, logit_diff_metric

ATOL = 1e-4
FULL_REFERENCE = os.environ.get("BENCH_FULL_REFERENCE", "0") == "1"
SAMPLE_FRACTION = 12


def _scalar_metric(bench):
    return lambda logits: logit_diff(logits, bench.answers)


def _sampled_cells(bench):
    cfg = bench.model.cfg
    cells = tlp.make_df_from_ranges([cfg.n_layers, bench.corrupted.shape[1], cfg.n_heads], ["layer", "pos", "head"])
    if FULL_REFERENCE:
        return cells, 1
    return cells.sample(len(cells) // SAMPLE_FRACTION, random_state=0).sort_index(), len(cells) / (len(cells) // SAMPLE_FRACTION)


def _check(benchmark, bench, name, ours):
    """Same numbers as the reference (on the cells it ran); the largest difference goes into extra_info,
    with the paths the sweeps took (as checked for this model and token shape)."""
    status = P.fast_path_status(bench.model, bench.corrupted)
    fast, truncate, why = status if status is not None else (False, False, "never checked")
    benchmark.extra_info.update(bench.paths, fast=fast, truncate=truncate, why_slow=why, atol=ATOL)
    ref = bench.reference.get(name)
    if ref is None:
        return
    if name == "head_by_pos":
        cells, values = ref
        ours = ours[tuple(torch.tensor(cells[c].to_list()) for c in ("layer", "pos", "head"))]
        ref = values
    benchmark.extra_info["max_abs_diff"] = float((ours - ref).abs().max())
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# residual stream, every layer x every position


def test_resid_pre_reference(benchmark, bench):
    benchmark.group = "resid_pre"
    benchmark.extra_info.update(sweep="resid_pre", impl="transformer_lens", scale=1.0)
    values = benchmark.pedantic(
        tlp.get_act_patch_resid_pre, args=(bench.model, bench.corrupted, bench.clean_cache, _scalar_metric(bench)),
        rounds=1, iterations=1,
    )
    bench.reference["resid_pre"] = values


# "lib": the default; "lib-every-patch-run": without answering identical-value patches from the
# unpatched run, i.e. batching and layer/position skipping only.
OURS = [pytest.param("lib", {}, 3, id="default"),
        pytest.param("lib-every-patch-run", {"skip_identical": False}, 1, id="every-patch-run")]


@pytest.mark.parametrize("impl, kwargs, rounds", OURS)
def test_resid_pre_ours(benchmark, bench, impl, kwargs, rounds):
    benchmark.group = "resid_pre"
    benchmark.extra_info.update(sweep="resid_pre", impl=impl)
    metric = logit_diff_metric(bench.answers)
    values = benchmark.pedantic(
        P.resid_pre_sweep, args=(bench.model, bench.corrupted, bench.clean_cache, metric), kwargs=kwargs,
        rounds=rounds, iterations=1,
    )
    _check(benchmark, bench, "resid_pre", values)


# ---------------------------------------------------------------------------------------------
# attention heads, every layer x every position x every head


def test_head_by_pos_reference(benchmark, bench):
    benchmark.group = "head_by_pos"
    cells, scale = _sampled_cells(bench)
    benchmark.extra_info.update(sweep="head_by_pos", impl="transformer_lens", scale=scale, cells=len(cells))
    values = benchmark.pedantic(
        tlp.generic_activation_patch,
        args=(bench.model, bench.corrupted, bench.clean_cache, _scalar_metric(bench), tlp.layer_pos_head_vector_patch_setter, "z"),
        kwargs={"index_df": cells}, rounds=1, iterations=1,
    )
    bench.reference["head_by_pos"] = (cells, values)


@pytest.mark.parametrize("impl, kwargs, rounds", OURS)
def test_head_by_pos_ours(benchmark, bench, impl, kwargs, rounds):
    benchmark.group = "head_by_pos"
    benchmark.extra_info.update(sweep="head_by_pos", impl=impl)
    metric = logit_diff_metric(bench.answers)
    values = benchmark.pedantic(
        P.head_out_by_pos_sweep, args=(bench.model, bench.corrupted, bench.clean_cache, metric), kwargs=kwargs,
        rounds=min(rounds, 2), iterations=1,
    )
    _check(benchmark, bench, "head_by_pos", values)
