"""Shared set-up of the patching benchmarks: the 12-layer, d_model 768, 12-head GPT-2-shaped zoo model and
the seed-002 prompt pair (12 tokens with BOS).

lib.patching checks its fast path once per model and token shape, on its first run; that run is made here,
timed apart from the sweeps, and its outcome (which paths are on, or why not) goes with every result."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

CLEAN = "Her name was Alex Hart . Tomorrow at lunch time Alex"
CORRUPT = "Her name was Alex Carroll . Tomorrow at lunch time Alex"
ANSWERS = (" Hart", " Carroll")
MODEL = os.environ.get("BENCH_MODEL", "zoo:bench-gpt2-d768")


def pytest_configure(config):
    path = config.getoption("benchmark_json", None)
    if path is not None:
        Path(getattr(path, "name", str(path))).parent.mkdir(parents=True, exist_ok=True)


@dataclass
class Bench:
    model: object
    clean: torch.Tensor
    corrupted: torch.Tensor
    answers: torch.Tensor
    clean_cache: object
    reference: dict  # sweep name -> reference values (filled by the reference benchmarks)
    paths: dict = field(default_factory=dict)  # which paths lib.patching takes, and its first run's time


@pytest.fixture(scope="session")
def bench() -> Bench:
    from lib.loading import load_model
    from lib.patching import donor_cache, recipient_run
    from lib.prompts import answer_tokens, paired_tokens

    torch.set_num_threads(1)  # a shared CPU: one thread is the stable (and, under load, the fastest) setting
    model = load_model(MODEL)
    clean, corrupted = paired_tokens(model, CLEAN, CORRUPT)
    out = Bench(model, clean, corrupted, answer_tokens(model, ANSWERS), donor_cache(model, clean), {})
    t0 = time.perf_counter()
    rec = recipient_run(model, corrupted)  # with the one-time self-check
    out.paths = {"model": MODEL, "tokens": list(corrupted.shape), "fast": rec.fast, "truncate": rec.truncate,
                 "why_slow": rec.why_slow, "first_run_seconds": time.perf_counter() - t0}
    return out
