"""The claim report: claims.json, claims.md and a self-contained claims.html, written atomically.

Every file is first written beside its destination and then renamed over it, figures first and the
three report files last, so a run that is interrupted leaves the previous report whole.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import os
import subprocess
import sys
from pathlib import Path

from lib.records import ClaimRecord, Table
from lib.versions import library_versions

VERDICT_ORDER = {"regression": 0, "error": 1, "refuted": 2, "holds": 3, "expected-refuted": 4, "not-run": 5}
VERDICT_COLOUR = {"holds": "#1a7f37", "refuted": "#cf222e", "expected-refuted": "#9a6700", "regression": "#a40e26",
                  "error": "#8250df", "not-run": "#6e7781"}
# Verdicts that say the suite itself moved (a registered refutation that no longer comes out as
# registered, a measurement that did not complete): they stand out from the findings.
ALARM_STYLE = {"regression": "background:#a40e26;color:#ffffff", "error": "background:#8250df;color:#ffffff"}


def provenance(checkpoints: dict[str, dict], repo: Path | None = None, **extra) -> dict:
    """Library versions, git commit, the checkpoints' weight hashes and tokenizer settings."""
    return {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": _git(repo, "rev-parse", "HEAD"),
        "git_dirty": bool(_git(repo, "status", "--porcelain", "--untracked-files=no")),
        "versions": library_versions(),
        "command": " ".join(sys.argv),
        "checkpoints": checkpoints,
        **extra,
    }


def _git(repo: Path | None, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def write_report(records: list[ClaimRecord], prov: dict, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: (r.claim, r.subject))
    figure_paths: dict[int, Path] = {}
    for r in records:
        for f in r.figures:
            path = figures_dir / f"{hashlib.sha256(f.png).hexdigest()[:16]}.png"
            if not path.exists():
                _atomic_write(path, f.png)
            figure_paths[id(f)] = path
    doc = {"provenance": prov, "results": [r.as_json() for r in records]}
    outputs = {
        "claims.json": json.dumps(doc, indent=2, default=str).encode(),
        "claims.md": _markdown(records, prov, figure_paths, out_dir).encode(),
        "claims.html": _html(records, prov).encode(),
    }
    staged = {name: _stage(out_dir / name, data) for name, data in outputs.items()}
    for name, tmp in staged.items():
        os.replace(tmp, out_dir / name)
    _prune(figures_dir, set(figure_paths.values()))
    return {name: out_dir / name for name in outputs}


def _stage(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _atomic_write(path: Path, data: bytes) -> None:
    os.replace(_stage(path, data), path)


def _prune(figures_dir: Path, keep: set[Path]) -> None:
    for p in figures_dir.glob("*.png"):
        if p not in keep:
            p.unlink(missing_ok=True)


def counts(records: list[ClaimRecord]) -> dict[str, int]:
    out = {v: 0 for v in VERDICT_ORDER}
    for r in records:
        out[r.verdict] = out.get(r.verdict, 0) + 1
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        inner = ", ".join(_fmt(x) for x in v[:6])
        return f"[{inner}{', ...' if len(v) > 6 else ''}]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in list(v.items())[:6]) + "}"
    return str(v)


def _kv(d: dict, sep: str = " = ") -> str:
    return "; ".join(f"{k}{sep}{_fmt(v)}" for k, v in d.items()) or "—"


def _provenance_lines(prov: dict) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items())
    lines = [
        f"- created: {prov.get('created')}",
        f"- git commit: {prov.get('git_commit')}{' (uncommitted changes)' if prov.get('git_dirty') else ''}",
        f"- versions: {versions}",
    ]
    for name, subj in prov.get("subjects", {}).items():
        refs = ", ".join(f"{role} `{ref}`" for role, ref in subj.get("checkpoints", {}).items())
        lines.append(f"- subject {name} ({subj.get('origin')}): {subj.get('description') or '—'}; {refs}")
    for ref, c in prov.get("checkpoints", {}).items():
        lines.append(
            f"- checkpoint `{ref}`: sha256 {str(c.get('weights_sha256'))[:16]}…, "
            f"prepend_bos={c.get('prepend_bos')}, bos_token={c.get('bos_token')!r}"
            + (f"; built with {_kv(c['zoo_metrics'])}" if c.get("zoo_metrics") else "")
        )
        for sample in c.get("samples", []):
            lines.append(f"  - sample: “{sample}”")
    return lines


def _rebuild_tables(prov: dict) -> list[Table]:
    """The zoo's reproducibility, as its last full rebuild from the recipes measured it."""
    rb = prov.get("zoo_rebuild")
    if not rb:
        return []
    m = rb.get("machine", {})
    where = f"{rb.get('created')}, {m.get('processor')}, kernels {m.get('cpu_capability')}"
    models = Table(f"Zoo rebuilt from its recipes ({where}): shipped vs rebuilt build metric",
                   ["model", "metric", "shipped", "rebuilt", "identical weight files"],
                   [[x["model"], x["metric"], x["shipped"], x["rebuilt"],
                     f"{x['identical_weight_files']}/{x['weight_files']}"] for x in rb.get("models", [])])
    out = [models]
    if rb.get("verdicts"):
        rows = [[v["claim"], v["subject"], v["verdict"], "yes" if v["reproduced"] else "no"] for v in rb["verdicts"]]
        n = sum(v["reproduced"] for v in rb["verdicts"])
        out.append(Table(f"Registered verdicts on the rebuilt zoo: {n} of {len(rows)} reproduced",
                         ["claim", "subject", "verdict on the rebuilt models", "reproduced"],
                         sorted(rows, key=lambda r: (r[3], r[0], r[1]))))
    return out


def _markdown(records: list[ClaimRecord], prov: dict, figure_paths: dict, out_dir: Path) -> str:
    c = counts(records)
    lines = [
        "# Claim report",
        "",
        " · ".join(f"{n} {v}" for v, n in c.items()),
        "",
        "| claim | subject | verdict | measured | threshold | published | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        cells = [r.claim, r.subject, _md_verdict(r.verdict), _kv(r.measured), _kv(r.threshold, " "), _kv(r.published), r.reason]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|").replace("\n", " ") for x in cells) + " |")
    lines += ["", "## Provenance", "", *_provenance_lines(prov), ""]
    for t in _rebuild_tables(prov):
        lines += [f"**{t.title}**", "", *_markdown_table(t), ""]
    figured = [r for r in records if r.figures or r.tables]
    if figured:
        lines += ["## Figures and tables", ""]
        for r in figured:
            lines.append(f"### {r.claim} on {r.subject}")
            for f in r.figures:
                rel = figure_paths[id(f)].relative_to(out_dir)
                lines.append(f"![{f.title}]({rel.as_posix()})")
            for t in r.tables:
                lines += ["", f"**{t.title}**", "", *_markdown_table(t)]
            lines.append("")
    return "\n".join(lines)


def _md_verdict(verdict: str) -> str:
    return f"**⚠ {verdict.upper()}**" if verdict in ALARM_STYLE else f"**{verdict}**"


def _cell(v) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def _markdown_table(t) -> list[str]:
    return [
        "| " + " | ".join(_cell(c) for c in t.columns) + " |",
        "|" + "---|" * len(t.columns),
        *("| " + " | ".join(_cell(v) for v in row) + " |" for row in t.rows),
    ]


def _html_table(t) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in row) + "</tr>" for row in t.rows)
    return f'<div class="tbl"><b>{e(t.title)}</b><table class="inner"><tr>{head}</tr>{body}</table></div>'


def _verdict_style(verdict: str, alarm: bool = True) -> str:
    return ALARM_STYLE[verdict] if alarm and verdict in ALARM_STYLE else f"color:{VERDICT_COLOUR.get(verdict, '#000')}"


def _html_count(verdict: str, n: int) -> str:
    return f'<span class="verdict" style="{_verdict_style(verdict, alarm=n > 0)}">{n} {html.escape(verdict)}</span>'


def _html(records: list[ClaimRecord], prov: dict) -> str:
    e = html.escape
    c = counts(records)
    rows = []
    for r in records:
        figs = "".join(
            f'<figure><img alt="{e(f.title)}" src="data:image/png;base64,{base64.b64encode(f.png).decode()}">'
            f"<figcaption>{e(f.title)}</figcaption></figure>"
            for f in r.figures
        ) + "".join(_html_table(t) for t in r.tables)
        rows.append(
            f"<tr><td><b>{e(r.claim)}</b><br><small>{e(r.statement)}</small></td><td>{e(r.subject)}</td>"
            f'<td><b class="verdict" style="{_verdict_style(r.verdict)}">{e(r.verdict)}</b></td><td>{e(_kv(r.measured))}</td>'
            f"<td>{e(_kv(r.threshold, sep=' '))}</td><td>{e(_kv(r.published))}</td><td>{e(r.reason)}</td></tr>"
            + (f'<tr><td colspan="7" class="figs">{figs}</td></tr>' if figs else "")
        )
    prov_items = "".join(f"<li>{e(line[2:])}</li>" for line in _provenance_lines(prov))
    summary = " · ".join(_html_count(v, n) for v, n in c.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Claim report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #d0d7de; padding: 6px 8px; vertical-align: top; text-align: left; font-size: 14px; }}
th {{ background: #f6f8fa; }}
small {{ color: #57606a; }}
td.figs figure {{ display: inline-block; margin: 4px 12px 4px 0; }}
td.figs img {{ max-width: 520px; }}
figcaption {{ font-size: 12px; color: #57606a; }}
div.tbl {{ display: inline-block; margin: 4px 12px 8px 0; vertical-align: top; }}
table.inner {{ width: auto; }}
table.inner td, table.inner th {{ font-size: 12px; padding: 2px 6px; }}
.verdict {{ padding: 1px 4px; border-radius: 3px; }}
</style></head><body>
<h1>Claim report</h1>
<p>{summary}</p>
<table><tr><th>claim</th><th>subject</th><th>verdict</th><th>measured</th><th>threshold</th><th>published</th><th>reason</th></tr>
{''.join(rows)}
</table>
<h2>Provenance</h2><ul>{prov_items}</ul>
{''.join(_html_table(t) for t in _rebuild_tables(prov))}
</body></html>
"""
