"""The cache of trained artefacts: entries named by what determines them, verified on read."""
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from fixtures import cache as C


def _probe_entry(root: Path) -> dict:
    """What a parallel run's worker does: ask the cache for an entry that takes a while to compute."""

    def compute() -> dict:
        with open(root / "computed", "a") as fh:
            fh.write("once\n")
        time.sleep(1.0)
        return {"acc": 1.0}

    return C.cached_json("probe", {"weights_sha256": "abc"}, compute, root=root)


def test_processes_needing_one_entry_at_once_compute_it_once(tmp_path):
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.map(_probe_entry, [tmp_path] * 3)
    assert results == [{"acc": 1.0}] * 3
    assert (tmp_path / "computed").read_text() == "once\n"


def test_cached_json_computes_once_and_rebuilds_a_corrupt_entry(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"acc": [0.5, 1.0]}

    key = {"weights_sha256": "abc", "seed": 1}
    assert C.cached_json("probe", key, compute, root=tmp_path) == {"acc": [0.5, 1.0]}
    assert C.cached_json("probe", key, compute, root=tmp_path) == {"acc": [0.5, 1.0]}
    assert len(calls) == 1
    (entry,) = (tmp_path / "probe").glob("*.json")
    data = json.loads(entry.read_text())
    data["payload"]["acc"][0] = 0.9  # tampered: the sha256 no longer matches
    entry.write_text(json.dumps(data))
    assert C.cached_json("probe", key, compute, root=tmp_path) == {"acc": [0.5, 1.0]}
    entry.write_text("{not json")
    assert C.cached_json("probe", key, compute, root=tmp_path) == {"acc": [0.5, 1.0]}
    assert len(calls) == 3
    C.cached_json("probe", {**key, "seed": 2}, compute, root=tmp_path)
    assert len(calls) == 4
    # an entry whose stored key differs from the one asked for is not used
    (entry,) = [e for e in (tmp_path / "probe").glob("*.json") if json.loads(e.read_text())["key"] == key]
    data = json.loads(entry.read_text())
    data["key"]["seed"] = 9
    entry.write_text(json.dumps(data))
    C.cached_json("probe", key, compute, root=tmp_path)
    assert len(calls) == 5


def test_array_sha256_sees_contents_dtype_and_shape():
    a = np.arange(6)
    assert C.array_sha256(a) == C.array_sha256(torch.arange(6))
    assert C.array_sha256(a) != C.array_sha256(a.reshape(2, 3))
    assert C.array_sha256(a) != C.array_sha256(a.astype(np.int32))
    b = a.copy()
    b[3] = 0
    assert C.array_sha256(a) != C.array_sha256(b)


def test_array_sha256_sees_one_token():
    tokens = torch.arange(12).reshape(3, 4)
    changed = tokens.clone()
    changed[2, 3] = 0
    assert C.array_sha256(tokens) == C.array_sha256(tokens.clone())
    assert C.array_sha256(tokens) != C.array_sha256(changed)
    assert C.array_sha256(tokens) != C.array_sha256(tokens.reshape(4, 3))


def test_directory_entry_is_verified_and_a_tampered_one_is_not(tmp_path):
    def write(d):
        (d / "a.txt").write_text("weights")

    entry = tmp_path / "entry"
    C.write_entry(entry, write)
    assert C.verified(entry)
    (entry / "a.txt").write_text("edited")
    assert not C.verified(entry)
    C.write_entry(entry, write)
    (entry / "stray.txt").write_text("x")
    assert not C.verified(entry)
    assert not C.verified(tmp_path / "missing")


def test_digest_names_parts_and_module_source():
    assert C.digest({"a": 1}) == C.digest({"a": 1})
    assert C.digest({"a": 1}) != C.digest({"a": 2})
    assert C.digest({"a": 1}, modules=("fixtures.cache",)) != C.digest({"a": 1})
