"""A parallel run (pytest-xdist) is the serial run spread over processes: the same rows with the same
verdicts, measured values and figures, in one report that the controller writes from the records its
workers send with their test reports. `-n 2` is xdist's `--tx popen --tx popen --dist load`: two
workers over execnet gateways, the mechanism of remote `--tx ssh=...` workers."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Claims on five zoo subjects, with figures, tables and registered refutations.
SELECTION = "RLHF_01 or RLHF_08 or IND_06 or GROK_01"


def run_claims(out: Path, *args: str) -> dict:
    """claims.json of a run with its own cache of trained artefacts, and the sha256 of each figure it wrote."""
    env = {**os.environ, "CLAIMS_CACHE_DIR": str(out / "cache")}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "claims", "-q", "-p", "no:cacheprovider", "--origin", "zoo", "-m", SELECTION,
         "--report-dir", str(out / "report"), *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "report" / "claims.json").read_text())
    figures = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "report" / "figures").glob("*.png")}
    return {"results": doc["results"], "figures": figures, "checkpoints": doc["provenance"]["checkpoints"]}


def test_parallel_run_reports_what_a_serial_run_does(tmp_path):
    serial = run_claims(tmp_path / "serial", "-p", "no:xdist")
    parallel = run_claims(tmp_path / "parallel", "-n", "2")
    assert len(serial["results"]) >= 6 and serial["figures"]
    assert [(r["claim"], r["subject"], r["verdict"]) for r in parallel["results"]] == \
        [(r["claim"], r["subject"], r["verdict"]) for r in serial["results"]]
    assert parallel == serial
