"""Print the times of each patching sweep from a pytest-benchmark JSON file, ending with
`speedup resid_pre=<ratio> head_by_pos=<ratio>` (transformer_lens.patching time / lib.patching time)."""
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


def _diff(info: dict) -> str:
    return f"; max |difference| {info['max_abs_diff']:.1e}" if "max_abs_diff" in info else ""


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else ".benchmarks/latest.json")
    found = times(path)
    ratios = {}
    for sweep in SWEEPS:
        if (sweep, "transformer_lens") not in found or (sweep, "lib") not in found:
            print(f"{sweep}: missing from {path}", file=sys.stderr)
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
