"""Versions of the libraries whose behaviour the measurements depend on."""
from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("torch", "transformers", "transformer-lens", "trl", "tokenizers", "numpy", "safetensors")


def library_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out
