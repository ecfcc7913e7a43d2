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


DEMO = '''
import os

from fixtures.catalogue import Paper, claim

PAPER = Paper("demo", "A demo paper", "seed002")


@claim("DEMO-01", statement="a claim whose process dies", shown="nowhere", rule="never reaches a verdict")
def test_dies(subject, params, model, record):
    os._exit(3)


@claim("DEMO-02", statement="the model has layers", shown="nowhere", rule="holds when n_layers >= 1")
def test_holds(subject, params, model, record):
    record.expect("n_layers", model.cfg.n_layers, ">=", 1)


@claim("DEMO-03", statement="the model is deep", shown="nowhere", rule="holds when n_layers >= 100")
def test_refuted(subject, params, model, record):
    record.expect("n_layers", model.cfg.n_layers, ">=", 100)
'''


def demo_run(pytester, monkeypatch, subject_file: str, *args: str):
    from tests.conftest import copy_checkpoint

    ckpt = copy_checkpoint("tiny-gpt2", pytester.path / "ckpt")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_claims=DEMO)
    pytester.makeconftest('pytest_plugins = ["fixtures.models", "fixtures.plugin"]\nimport test_claims  # noqa\n')
    pytester.makefile(".toml", subjects=subject_file.format(ckpt=ckpt))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(pytester.path / "out"),
                                         "--subject-file", "subjects.toml", "-n", "2", *args)


def test_a_worker_that_dies_is_an_error_row_and_its_claim_runs_once(pytester, monkeypatch):
    result = demo_run(pytester, monkeypatch, '[subjects.s]\ncheckpoints = {{ model = "{ckpt}" }}\n'
                                             '[subjects.s.claims.DEMO-01]\n[subjects.s.claims.DEMO-02]\n')
    assert result.ret == 6, result.stdout.str()[-2000:]
    rows = {r["claim"]: r for r in json.loads((pytester.path / "out" / "claims.json").read_text())["results"]}
    assert rows["DEMO-01"]["verdict"] == "error" and "the process measuring it died" in rows["DEMO-01"]["reason"]
    assert rows["DEMO-02"]["verdict"] == "holds"
    assert result.stdout.str().count("node down") == 1  # not run again on the replacement worker


def test_bad_input_stops_a_parallel_run_with_each_problem_once(pytester, monkeypatch):
    result = demo_run(pytester, monkeypatch, '[subjects.s]\ncheckpoints = {{ model = "{ckpt}/nowhere" }}\n'
                                             '[subjects.s.claims.DEMO-02]\n')
    assert result.ret == 4
    assert result.stdout.str().count("bad input: ") == 1
    result.stdout.fnmatch_lines(["bad input: *subjects.toml, subject s, checkpoint model = *nowhere*does not exist*",
                                 "nothing was measured: 1 problem(s) with the input, each on a line above"])
    assert not (pytester.path / "out" / "claims.json").exists()


def test_a_parallel_run_stopped_by_a_failure_reports_as_a_serial_one_does(pytester, monkeypatch):
    result = demo_run(pytester, monkeypatch, '[subjects.s]\ncheckpoints = {{ model = "{ckpt}" }}\n'
                                             '[subjects.s.claims.DEMO-03]\n', "-x")
    assert result.ret == 1, result.stdout.str()[-2000:]
    (row,) = json.loads((pytester.path / "out" / "claims.json").read_text())["results"]
    assert (row["claim"], row["verdict"]) == ("DEMO-03", "refuted")
