"""Tiny checkpoints for the lib's own tests."""
import shutil
from pathlib import Path

import pytest

from fixtures import zoo
from lib.loading import load_model

# The induction task on the tiny vocabulary: clean, last-name corrupted, and the (clean, corrupt) answers.
CLEAN = ["Her name was Alex Hart . Tomorrow at lunch time Alex", "His name was John Smith . Tomorrow at lunch time John"]
CORRUPT = ["Her name was Alex Carroll . Tomorrow at lunch time Alex", "His name was John Jones . Tomorrow at lunch time John"]
ANSWERS = [(" Hart", " Carroll"), (" Smith", " Jones")]


def copy_checkpoint(name: str, dest: Path) -> Path:
    """A writable copy of zoo checkpoint `name` (without its manifest) at `dest`."""
    shutil.copytree(zoo.path(name), dest, ignore=shutil.ignore_patterns(zoo.MANIFEST))
    return dest


def hub_layout(src: Path, hf_home: Path, repo_id: str, commit: str = "0" * 40) -> Path:
    """Place checkpoint `src` in a Hugging Face Hub cache under `repo_id`, as a download would."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(src, snapshot, ignore=shutil.ignore_patterns(zoo.MANIFEST))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def gpt2_dir(tmp_path) -> Path:
    return copy_checkpoint("tiny-gpt2", tmp_path / "gpt2")


@pytest.fixture
def neox_dir(tmp_path) -> Path:
    return copy_checkpoint("tiny-neox", tmp_path / "neox")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache, with the Hub out of reach."""
    from lib import loading

    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loading.hub_reachable.cache_clear()
    yield home
    loading.hub_reachable.cache_clear()


@pytest.fixture(scope="module", params=["zoo:tiny-gpt2", "zoo:tiny-neox"])
def model(request):
    """Each tiny architecture in turn (a module may override it)."""
    return load_model(request.param)
