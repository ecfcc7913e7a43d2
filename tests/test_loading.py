"""The loader on tiny GPT-2 and GPT-NeoX checkpoints: every reference kind, every refusal."""
import json

import pytest
import torch

from lib.errors import CheckpointError, CheckpointUnavailable
from lib.loading import load_model, resolve
from tests.conftest import hub_layout

PROMPT = "Her name was Alex Hart . Tomorrow at lunch time Alex"


def hf_logits(directory, tokens):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(directory), attn_implementation="eager").eval()
    with torch.no_grad():
        return hf(tokens).logits


@pytest.mark.parametrize("arch_dir", ["gpt2_dir", "neox_dir"])
def test_local_directory_matches_raw_transformers(arch_dir, request):
    directory = request.getfixturevalue(arch_dir)
    model = load_model(directory)
    tokens = model.to_tokens(PROMPT)
    with torch.no_grad():
        ours = model(tokens)
    torch.testing.assert_close(ours, hf_logits(directory, tokens), atol=1e-5, rtol=0)
    assert model.checkpoint.source == "local"
    assert len(model.checkpoint.weights_sha256) == 64


def test_bos_follows_the_vocabulary(gpt2_dir, neox_dir):
    gpt2, neox, nobos = load_model(gpt2_dir), load_model(neox_dir), load_model("zoo:tiny-gpt2-nobos")
    assert gpt2.to_str_tokens("Her name")[0] == "<bos>"
    assert neox.to_str_tokens("Her name")[0] == "Her"  # the NeoX adapter does not prepend
    assert nobos.to_str_tokens("Her name") == ["Her", "name"]  # no BOS in the vocabulary, none prepended


def test_hub_id_resolves_offline_from_the_hub_cache(gpt2_dir, offline_hub):
    hub_layout(gpt2_dir, offline_hub, "someone/tiny-gpt2")
    model = load_model("someone/tiny-gpt2")
    assert model.checkpoint.source == "hub"
    assert model.checkpoint.path.parent.name == "snapshots"
    assert model.checkpoint.weights_sha256 == resolve(gpt2_dir).weights_sha256


def test_uncached_hub_id_is_unavailable_with_one_line_reason(offline_hub):
    with pytest.raises(CheckpointUnavailable) as e:
        resolve("lvwerra/gpt2-imdb")
    msg = str(e.value)
    assert "\n" not in msg
    assert "lvwerra/gpt2-imdb" in msg and "HF_HOME" in msg and "--checkpoint" in msg


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_hub_download_takes_pickled_weights_only_where_there_are_no_safetensors(weights, tmp_path, monkeypatch):
    """A repository with safetensors is fetched without its pickled copies; one with only
    pytorch_model.bin (as many of the seeds' era) is fetched with it."""
    import fnmatch
    import shutil

    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from lib import loading

    repo = {"config.json": "{}", weights: "w", "pytorch_model.bin": "w", "flax_model.msgpack": "w", "vocab.json": "{}"}
    calls = []

    def snapshot_download(repo_id, cache_dir=None, allow_patterns=None, local_files_only=False, **_):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        calls.append(allow_patterns)
        out = tmp_path / f"snapshot-{len(calls)}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        for name, text in repo.items():
            if any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (out / name).write_text(text)
        return str(out)

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(loading, "hub_reachable", lambda *a, **k: True)
    got = sorted(p.name for p in loading._hub_snapshot("someone/model").iterdir())
    if weights == "model.safetensors":
        assert got == ["config.json", "model.safetensors", "vocab.json"] and len(calls) == 1
    else:
        assert got == ["config.json", "pytorch_model.bin", "vocab.json"] and len(calls) == 2


def test_zoo_reference(tmp_path):
    model = load_model("zoo:tiny-neox")
    assert model.checkpoint.source == "zoo"
    with pytest.raises(CheckpointError, match="unknown zoo model"):
        resolve("zoo:no-such-model")


def test_missing_directory():
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve("./no/such/checkpoint")


def test_truncated_weights_name_the_file(gpt2_dir):
    weights = gpt2_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated"):
        load_model(gpt2_dir)


def test_corrupt_header_names_the_file(gpt2_dir):
    weights = gpt2_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\xff\xfe garbl"
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        load_model(gpt2_dir)


def test_header_length_beyond_the_file(gpt2_dir):
    weights = gpt2_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[:8] = (10**9).to_bytes(8, "little")
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        resolve(gpt2_dir)


def test_missing_config_and_tokenizer(gpt2_dir, tmp_path):
    (gpt2_dir / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        resolve(gpt2_dir)
    (gpt2_dir / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        resolve(gpt2_dir)


def test_invalid_config(gpt2_dir):
    (gpt2_dir / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        resolve(gpt2_dir)


def test_no_weights(gpt2_dir):
    (gpt2_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="holds no weights"):
        resolve(gpt2_dir)


def test_sharded_index_with_a_missing_shard(gpt2_dir):
    (gpt2_dir / "model.safetensors").rename(gpt2_dir / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (gpt2_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        resolve(gpt2_dir)


def test_cuda_without_a_gpu_is_a_clear_error(gpt2_dir):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(CheckpointError, match="no CUDA device"):
        load_model(gpt2_dir, device="cuda")
