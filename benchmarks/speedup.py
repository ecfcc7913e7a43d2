"""Print the times of each patching sweep from a pytest-benchmark JSON file: first whether lib.patching's fast
path and its position truncation ran, then each sweep against transformer_lens.patching (timed in the same
run, same numbers checked), ending with `speedup resid_pre=<ratio> head_by_pos=<ratio>`
(transformer_lens.patching time / lib.patching time). Exits 1 where a sweep is missing or its numbers were
not checked against the reference."""
from __future__ import annotations

import json
import sys
from pathlib import Path

SWEEPS = ("resid_pre", "head_by_pos")


def times(path: Path) -> dict[tuple[str, str], tuple[float, dict]]:
    data = json.loads(path.read_text())
    out = {}
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "sweep" in info:
            out[(info["sweep"], info["impl"])] = (b["stats"]["mean"], info)
    return out


def paths(info: dict) -> list[str]:
    """Which of lib.patching's paths the sweeps took, and the one-time cost of checking them."""
    where = f"{info.get('model', 'the model')}, tokens {info.get('tokens', '?')}"
    if "fast" not in info:
        return [f"fast path on {where}: not recorded in this file"]
    if not info["fast"]:
        return [f"fast path on {where}: did NOT run ({info.get('why_slow') or 'no reason recorded'}); "
                f"every patched run was a full forward pass"]
    lines = [f"fast path on {where}: ran (each patched run starts at its patched layer)"]
    if info.get("truncate"):
        lines.append("truncation: ran (positions before a run's first patched position are not recomputed)")
    else:
        lines.append(f"truncation: did NOT run ({info.get('why_slow') or 'no reason recorded'}); every position recomputed")
    if "first_run_seconds" in info:
        lines.append(f"lib.patching's first run with its self-check, once per model and token shape: "
                     f"{info['first_run_seconds']:.2f} s (not in the times below)")
    return lines


def _diff(info: dict) -> str:
    return f"; max |difference| {info['max_abs_diff']:.1e} (atol {info.get('atol', 1e-4):g})"


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else ".benchmarks/latest.json")
    found = times(path)
    ratios = {}
    lib_info = next((info for (_, impl), (_, info) in found.items() if impl == "lib"), {})
    for line in paths(lib_info):
        print(line)
    for sweep in SWEEPS:
        if (sweep, "transformer_lens") not in found or (sweep, "lib") not in found:
            print(f"{sweep}: missing from {path}", file=sys.stderr)
            return 1
        unchecked = [impl for (s, impl), (_, info) in found.items()
                     if s == sweep and impl != "transformer_lens" and "max_abs_diff" not in info]
        if unchecked:
            print(f"{sweep}: {', '.join(unchecked)} not checked against transformer_lens.patching in this run",
                  file=sys.stderr)
            return 1
        ref, info = found[(sweep, "transformer_lens")]
        scale = float(info.get("scale", 1.0))
        ref_total = ref * scale
        ours, our_info = found[(sweep, "lib")]
        note = f" ({info['cells']} cells timed, scaled by {scale:g})" if scale != 1.0 else ""
        print(
            f"{sweep}: transformer_lens.patching {ref_total:.2f} s{note}; lib.patching {ours:.2f} s; "
            f"speedup {ref_total / ours:.1f}x{_diff(our_info)}"
        )
        if (sweep, "lib-every-patch-run") in found:
            every, every_info = found[(sweep, "lib-every-patch-run")]
            print(
                f"{sweep}: lib.patching with every patch run (skip_identical=False) {every:.2f} s; "
                f"speedup {ref_total / every:.1f}x{_diff(every_info)}"
            )
        ratios[sweep] = ref_total / ours
    print("speedup " + " ".join(f"{s}={ratios[s]:.1f}" for s in SWEEPS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
