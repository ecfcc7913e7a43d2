"""What the claims cost at the published subjects' sizes: each claim family runs, in a process of its own
with a cold cache, on randomly initialised stand-ins of the published shapes (benchmarks/standins.py),
with the published subjects' own parameters from the registry. Prints one row per family and shape (wall
seconds, peak resident memory, the budget) and exits 1 where a budget is exceeded or a claim did not run
to a verdict.

    python -m benchmarks.scale [--out DIR] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "fixtures" / "subjects.toml"


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # the claims, as the table shows them
    shape: str  # a key of standins.SHAPES
    subjects: tuple[str, ...]  # registry subjects whose params and claims it takes, in order
    marker: str  # pytest -m expression selecting the claims
    claims: tuple[str, ...]  # the claims that must reach a verdict
    seconds: float | None = None  # budgets; None: not budgeted
    megabytes: float | None = None
    extra: dict = field(default_factory=dict)  # params added to every claim (e.g. IND-05's longer flow)


def _ids(prefix: str, numbers) -> tuple[str, ...]:
    return tuple(f"{prefix}-{i:02d}" for i in numbers)


def _ind05_flow(n_layers: int) -> dict:
    """IND-05's positions per heatmap row for `n_layers` blocks: the shape of the published flow (gelu-2l's
    rows with the middle one repeated); the claim's verdict on random weights is not what is measured."""
    return {"first_first_name": ["first_name"] + ["last_name"] * (n_layers - 1) + ["final"],
            "last_name": ["last_name"] * n_layers + ["final"]}


CASES = (
    Case("seed000-gpt2", "RLHF-01..08", "gpt2-small", ("gpt2-imdb-rlhf",), "seed000", _ids("RLHF", range(1, 9)),
         seconds=90),
    Case("seed002-gpt2", "IND-01..08", "gpt2-small", ("gpt2-small", "gelu-2l"), "seed002", _ids("IND", range(1, 9)),
         seconds=90, extra={"IND-05": {"argmax_positions": _ind05_flow(12)}}),
    Case("seed001-pythia70m", "LFP-01..08", "pythia-70m", ("pythia-70m-vader",), "seed001", _ids("LFP", range(1, 9)),
         seconds=20 * 60, megabytes=6 * 1024),
    Case("seed004-pythia70m", "SAE-01..03", "pythia-70m", ("pythia-70m-deduped",), "SAE_01 or SAE_02 or SAE_03",
         _ids("SAE", range(1, 4)), seconds=10 * 60),
    Case("seed001-pythia160m", "LFP-01..08", "pythia-160m", ("pythia-160m-vader",), "seed001",
         _ids("LFP", range(1, 9)), megabytes=16 * 1024),
    Case("seed004-pythia160m", "SAE-01..04", "pythia-160m", ("pythia-70m-deduped",), "seed004", _ids("SAE", range(1, 5)),
         megabytes=16 * 1024),
)
PAIRED = ("seed000", "seed001")


def subject_file(case: Case, checkpoints: dict[str, Path], path: Path) -> Path:
    """The registry's parameters for the case's claims, as a subject file of one subject."""
    from fixtures.discover import toml_value

    entries = tomllib.loads(REGISTRY.read_text())["subjects"]
    params, claims = {}, {}
    for name in case.subjects:
        params.update(entries[name].get("params", {}))
        for claim, table in entries[name].get("claims", {}).items():
            claims.setdefault(claim, {}).update(table)
    for claim in case.claims:
        claims.setdefault(claim, {}).update(case.extra.get(claim, {}))
    lines = ['[subjects."standin"]', 'origin = "local"',
             f"description = {toml_value(f'{case.shape}-shaped stand-in, random weights')}",
             f"checkpoints = {toml_value({k: str(v) for k, v in checkpoints.items()})}", '[subjects."standin".params]']
    lines += [f"{k} = {toml_value(v)}" for k, v in params.items()]
    for claim in case.claims:
        lines.append(f'[subjects."standin".claims."{claim}"]')
        lines += [f"{k} = {toml_value(v)}" for k, v in claims[claim].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_case(case: Case, out: Path) -> dict:
    """Runs the case in a child process (`--child`) and returns its row."""
    from benchmarks import standins

    pair = case.marker.split()[0] in PAIRED
    dirs = standins.build(out / "models", case.shape, pair=pair)
    work = out / case.name
    work.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "benchmarks.scale", "--child", "-m", case.marker, "-q", "--tb=line", "--durations=5",
            "-p", "no:randomly", "--report-dir", str(work / "report"),
            "--subject-file", str(subject_file(case, dirs, work / "subject.toml"))]
    env = {**os.environ, "CLAIMS_CACHE_DIR": str(work / "cache"), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (work / "log.txt").write_text(proc.stdout + proc.stderr)
    peak = json.loads((work / "peak.json").read_text())["peak_mb"] if (work / "peak.json").is_file() else None
    verdicts = {}
    if (work / "report" / "claims.json").is_file():
        verdicts = {r["claim"]: r["verdict"] for r in json.loads((work / "report" / "claims.json").read_text())["results"]}
    problems = [f"{c}: {verdicts.get(c, 'did not run')}" for c in case.claims if verdicts.get(c) not in ("holds", "refuted")]
    over = []
    if case.seconds and seconds > case.seconds:
        over.append(f"{seconds:.0f} s > {case.seconds:.0f} s")
    if case.megabytes and (peak or 0) > case.megabytes:
        over.append(f"{peak:.0f} MB > {case.megabytes:.0f} MB")
    return {"case": case.name, "family": case.family, "shape": case.shape, "seconds": seconds, "peak_mb": peak,
            "budget_s": case.seconds, "budget_mb": case.megabytes, "problems": problems, "over": over}


def child(argv: list[str]) -> int:
    """pytest in this process; its peak resident memory goes to peak.json beside the report."""
    import pytest

    code = pytest.main(["claims", *argv])
    report = Path(argv[argv.index("--report-dir") + 1])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (report.parent / "peak.json").write_text(json.dumps({"peak_mb": peak_kb / 1024}))
    return int(code)


def table(rows: list[dict]) -> list[str]:
    def budget(v, unit):
        return f"<= {v:.0f} {unit}" if v else "-"

    lines = [f"{'claims':<12} {'shape':<12} {'wall s':>8} {'budget':>10} {'peak MB':>8} {'budget':>11}  status"]
    for r in rows:
        status = "; ".join(r["problems"] + r["over"]) or "ok"
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "?"
        lines.append(f"{r['family']:<12} {r['shape']:<12} {r['seconds']:>8.0f} {budget(r['budget_s'], 's'):>10} "
                     f"{peak:>8} {budget(r['budget_mb'], 'MB'):>11}  {status}")
    return lines


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--child":
        return child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".benchmarks" / "scale")
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    args = ap.parse_args(argv)
    rows = []
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        rows.append(run_case(case, args.out))
        print(table(rows)[-1], flush=True)
    (args.out / "scale.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(table(rows)))
    return 1 if any(r["problems"] or r["over"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
