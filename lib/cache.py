"""The cache of trained artefacts (SAEs, tunings, probe and graph results) under `.cache/`.

An entry's name hashes everything that determines it: the request (model weights sha256, hook, the
sha256 of the exact token ids, parameters), the source of the modules that compute it and the library
versions. Entries are written to a temporary sibling and renamed into place, carry the sha256 of their
contents, and are verified on read: a partial, edited or mismatched entry is recomputed, never used.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "MANIFEST.json"


def cache_dir() -> Path:
    return Path(os.environ.get("CLAIMS_CACHE_DIR", REPO_ROOT / ".cache"))


def digest(*parts, modules: Sequence[str] = ()) -> str:
    """Hash of JSON-able `parts`, the source of `modules` and the library versions: a cache entry's name."""
    import sklearn

    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    for mod in modules:
        h.update(inspect.getsource(sys.modules[mod]).encode())
    h.update(f"torch {torch.__version__} sklearn {sklearn.__version__} numpy {np.__version__}".encode())
    return h.hexdigest()[:20]


def array_sha256(*arrays: Tensor | np.ndarray) -> str:
    """sha256 over the dtypes, shapes and contents of `arrays`: names the exact data (token ids, labels) an
    entry was built from, whatever generator and tokenizer produced it."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a.detach().cpu().numpy() if isinstance(a, Tensor) else a)
        h.update(f"{a.dtype} {a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def as_json(value) -> object:
    """`value` as it reads back from the JSON of a cache entry."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verified(directory: Path) -> bool:
    """Whether every file of a directory entry is present and matches its manifest."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files = {p.name for p in directory.iterdir() if p.name != MANIFEST}
        return files == set(manifest) and all(_sha256(directory / f) == d for f, d in manifest.items())
    except (OSError, ValueError, AttributeError):
        return False


def write_entry(out: Path, write: Callable[[Path], None]) -> None:
    """Build a directory entry in a temporary sibling with `write(dir)`, add its manifest, move it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write(tmp)
        (tmp / MANIFEST).write_text(json.dumps({p.name: _sha256(p) for p in sorted(tmp.iterdir())}))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_json(kind: str, key: dict, compute: Callable[[], Any], *, modules: Sequence[str] = (),
                root: str | os.PathLike | None = None) -> Any:
    """`compute()` (JSON-able), kept in `<root>/<kind>/<digest>.json`. `key` must name everything that
    determines the result besides the source of `modules` (model weights sha256, data, parameters).
    The entry carries its key and the sha256 of its payload; one that fails to parse, holds another key
    or fails to verify is recomputed."""
    path = (Path(root) if root is not None else cache_dir()) / kind / f"{digest(key, modules=modules)}.json"
    try:
        entry = json.loads(path.read_text())
        payload = json.dumps(entry["payload"], sort_keys=True)
        if entry["key"] == as_json(key) and hashlib.sha256(payload.encode()).hexdigest() == entry["sha256"]:
            return entry["payload"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    payload = json.loads(json.dumps(compute(), sort_keys=True))
    sha = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"key": key, "payload": payload, "sha256": sha}, fh, default=str)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return payload
