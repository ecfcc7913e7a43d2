"""Weights in the formats the papers' checkpoints ship in: `pytorch_model.bin` (read by torch's weights-only
loader, by default), a pickle that needs full unpickling (only with allow_pickle), and TransformerLens' own
format (gelu-2l's: a `.pth` HookedTransformer state dict and its config), read as the equivalent GPT-2 and
checked against TransformerLens' own reading of it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import einops
import pytest
import torch
from safetensors.torch import load_file

from lib.errors import CheckpointError, PickleRefused
from lib.loading import PICKLE_FULL, PICKLE_WEIGHTS_ONLY, TRANSFORMER_LENS, load_model, resolve
from tests.conftest import copy_checkpoint

TOKENS = torch.tensor([[1, 5, 9, 2, 7, 3, 3, 8]])


class StateDict(dict):
    """A dict subclass: torch's weights-only loader refuses it (its class is code), full unpickling reads it."""


class RunsCode:
    """A pickle that runs code when unpickled: it writes a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def logits(model, tokens: torch.Tensor = TOKENS) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens)


def as_bin(src: Path, dest: Path, wrap=dict) -> Path:
    """A copy of checkpoint `src` whose weights are a pytorch_model.bin pickle of `wrap(state_dict)`."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model.safetensors", "MANIFEST.json"))
    torch.save(wrap(load_file(src / "model.safetensors")), dest / "pytorch_model.bin")
    return dest


def test_a_bin_state_dict_loads_by_default_with_the_weights_only_loader(gpt2_dir, tmp_path):
    ref = load_model(gpt2_dir)
    model = load_model(as_bin(gpt2_dir, tmp_path / "bin"))
    assert model.checkpoint.weights_format == PICKLE_WEIGHTS_ONLY
    assert model.checkpoint.weight_files[0].name == "pytorch_model.bin"
    assert torch.equal(logits(model), logits(ref))


def test_weights_sit_in_memory_of_their_own_whatever_the_file_format(gpt2_dir, tmp_path):
    """Kernels take other paths on other alignments; weights mapped from a safetensors file sit at the file's
    offsets. Loaded, every weight's storage is freshly allocated (64-byte aligned) whatever the format, and
    the views that shared one (q, k and v of the fused qkv) still do."""
    for model in (load_model(gpt2_dir), load_model(as_bin(gpt2_dir, tmp_path / "bin"))):
        params = dict(model.named_parameters(remove_duplicate=False))
        assert all(p.untyped_storage().data_ptr() % 64 == 0 for p in params.values())
        fused = [n for n in params if n.endswith("attn.qkv._original_component.weight")]
        assert fused
        for name in fused:
            q = params[name.replace("attn.qkv.", "attn.q.")]
            assert q.untyped_storage().data_ptr() == params[name].untyped_storage().data_ptr()


def test_sharded_bin_weights_load(gpt2_dir, tmp_path):
    path = as_bin(gpt2_dir, tmp_path / "bin")
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    (path / "pytorch_model.bin").unlink()
    keys = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
              "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
    for name, part in shards.items():
        torch.save({k: state[k] for k in part}, path / name)
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    model = load_model(path)
    assert [f.name for f in model.checkpoint.weight_files] == sorted(shards)
    assert torch.equal(logits(model), logits(load_model(gpt2_dir)))


def test_a_pickle_that_needs_full_unpickling_is_refused_unless_allowed(gpt2_dir, tmp_path):
    path = as_bin(gpt2_dir, tmp_path / "bin", wrap=StateDict)
    with pytest.raises(PickleRefused, match="objects other than tensors.*--allow-pickle"):
        resolve(path)
    model = load_model(path, allow_pickle=True)
    assert model.checkpoint.weights_format == PICKLE_FULL
    assert torch.equal(logits(model), logits(load_model(gpt2_dir)))


def test_a_pickle_that_would_run_code_runs_none_when_refused(gpt2_dir, tmp_path):
    path = as_bin(gpt2_dir, tmp_path / "bin")
    marker = tmp_path / "marker"
    torch.save({"payload": RunsCode(marker)}, path / "pytorch_model.bin")
    with pytest.raises(PickleRefused):
        resolve(path)
    assert not marker.exists()


def test_a_bin_that_is_not_a_pickle_is_one_line(gpt2_dir, tmp_path):
    path = as_bin(gpt2_dir, tmp_path / "bin")
    (path / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="pytorch_model.bin could not be read"):
        resolve(path)


# ---------------------------------------------------------------------------------------------
# TransformerLens' own format


def tl_config(n_layers: int = 2, d_model: int = 32, n_heads: int = 4, d_vocab: int = 39, act_fn: str = "gelu") -> dict:
    return {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads, "d_head": d_model // n_heads,
            "d_mlp": 4 * d_model, "d_vocab": d_vocab, "n_ctx": 64, "act_fn": act_fn, "normalization": "LN",
            "attn_only": False, "tokenizer_name": "NeelNanda/gpt-neox-tokenizer-digits", "shortformer_pos": False}


def random_tl_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A HookedTransformer state dict of random weights, biases included (the unembedding bias is zero)."""
    g = torch.Generator().manual_seed(seed)
    d, h, dh, dm, v = cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["d_mlp"], cfg["d_vocab"]

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    ln = cfg["normalization"] == "LN"
    sd = {"embed.W_E": r(v, d), "pos_embed.W_pos": r(cfg["n_ctx"], d), "unembed.W_U": r(d, v), "unembed.b_U": torch.zeros(v)}
    sd |= {"ln_final.w": 1 + r(d), "ln_final.b": r(d)} if ln else {}
    for layer in range(cfg["n_layers"]):
        b = f"blocks.{layer}"
        sd |= {f"{b}.attn.W_Q": r(h, d, dh), f"{b}.attn.W_K": r(h, d, dh), f"{b}.attn.W_V": r(h, d, dh),
               f"{b}.attn.b_Q": r(h, dh), f"{b}.attn.b_K": r(h, dh), f"{b}.attn.b_V": r(h, dh),
               f"{b}.attn.W_O": r(h, dh, d), f"{b}.attn.b_O": r(d),
               f"{b}.attn.mask": torch.tril(torch.ones(cfg["n_ctx"], cfg["n_ctx"])).bool(), f"{b}.attn.IGNORE": torch.tensor(-1e5)}
        sd |= {f"{b}.ln1.w": 1 + r(d), f"{b}.ln1.b": r(d)} if ln else {}
        if not cfg["attn_only"]:
            sd |= {f"{b}.mlp.W_in": r(d, dm), f"{b}.mlp.b_in": r(dm), f"{b}.mlp.W_out": r(dm, d), f"{b}.mlp.b_out": r(d)}
            sd |= {f"{b}.ln2.w": 1 + r(d), f"{b}.ln2.b": r(d)} if ln else {}
    return sd


def gpt2_as_tl(state: dict[str, torch.Tensor], hf_cfg: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A Hugging Face GPT-2 state dict and config written as TransformerLens' format (a HookedTransformer
    state dict and config), as TransformerLens' own training code saves its models."""
    d, h, n_layers = hf_cfg["n_embd"], hf_cfg["n_head"], hf_cfg["n_layer"]
    cfg = {**tl_config(n_layers, d, h, hf_cfg["vocab_size"], hf_cfg["activation_function"]),
           "d_mlp": hf_cfg.get("n_inner") or 4 * d, "n_ctx": hf_cfg["n_positions"]}
    sd = {"embed.W_E": state["transformer.wte.weight"], "pos_embed.W_pos": state["transformer.wpe.weight"],
          "ln_final.w": state["transformer.ln_f.weight"], "ln_final.b": state["transformer.ln_f.bias"],
          "unembed.W_U": state.get("lm_head.weight", state["transformer.wte.weight"]).T.contiguous(),
          "unembed.b_U": torch.zeros(hf_cfg["vocab_size"])}
    for layer in range(n_layers):
        b, t = f"transformer.h.{layer}", f"blocks.{layer}"
        w_q, w_k, w_v = state[f"{b}.attn.c_attn.weight"].split(d, dim=1)
        b_q, b_k, b_v = state[f"{b}.attn.c_attn.bias"].split(d)
        for x, w, bias in (("Q", w_q, b_q), ("K", w_k, b_k), ("V", w_v, b_v)):
            sd[f"{t}.attn.W_{x}"] = einops.rearrange(w, "m (i h) -> i m h", i=h).contiguous()
            sd[f"{t}.attn.b_{x}"] = einops.rearrange(bias, "(i h) -> i h", i=h).contiguous()
        sd[f"{t}.attn.W_O"] = einops.rearrange(state[f"{b}.attn.c_proj.weight"], "(i h) m -> i h m", i=h).contiguous()
        sd[f"{t}.attn.b_O"] = state[f"{b}.attn.c_proj.bias"]
        for tl, hf in (("ln1", "ln_1"), ("ln2", "ln_2")):
            sd[f"{t}.{tl}.w"], sd[f"{t}.{tl}.b"] = state[f"{b}.{hf}.weight"], state[f"{b}.{hf}.bias"]
        sd[f"{t}.mlp.W_in"], sd[f"{t}.mlp.b_in"] = state[f"{b}.mlp.c_fc.weight"], state[f"{b}.mlp.c_fc.bias"]
        sd[f"{t}.mlp.W_out"], sd[f"{t}.mlp.b_out"] = state[f"{b}.mlp.c_proj.weight"], state[f"{b}.mlp.c_proj.bias"]
    return sd, cfg


def write_tl_checkpoint(dest: Path, sd: dict, cfg: dict, tokenizer_from: Path) -> Path:
    """A TransformerLens-format directory: model_final.pth, its config.json, and a tokenizer."""
    dest.mkdir(parents=True)
    torch.save(sd, dest / "model_final.pth")
    (dest / "config.json").write_text(json.dumps(cfg))
    for f in tokenizer_from.glob("tokenizer*.json"):
        shutil.copy(f, dest / f.name)
    return dest


def tl_native_bridge(sd: dict, cfg: dict, tokenizer):
    """TransformerLens' own reading of the format (its native model, as its legacy-repo loader builds it)."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import boot as boot_native
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    bcfg = TransformerBridgeConfig(
        d_model=cfg["d_model"], n_layers=cfg["n_layers"], d_mlp=cfg["d_mlp"], d_head=cfg["d_head"],
        n_heads=cfg["n_heads"], n_ctx=cfg["n_ctx"], d_vocab=cfg["d_vocab"], act_fn=cfg["act_fn"],
        attn_only=cfg["attn_only"], normalization_type=cfg["normalization"], positional_embedding_type="standard",
        architecture="TransformerLensNative")
    bridge = boot_native(bcfg, tokenizer=tokenizer, device="cpu", dtype=torch.float32)
    weights = {k: v for k, v in sd.items() if not k.endswith(("attn.mask", "attn.IGNORE"))}
    converted = convert_tl_checkpoint(weights, bcfg)
    converted.setdefault("unembed.bias", torch.zeros(cfg["d_vocab"]))
    result = bridge.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return bridge.eval()


@pytest.mark.parametrize("variant", [{}, {"act_fn": "gelu_new"}, {"normalization": "LNPre"}, {"attn_only": True}],
                         ids=["gelu-LN", "gelu_new", "LNPre", "attn-only"])
def test_a_transformer_lens_checkpoint_reads_as_transformer_lens_reads_it(gpt2_dir, tmp_path, variant):
    cfg = {**tl_config(), **variant}
    sd = random_tl_state_dict(cfg)
    path = write_tl_checkpoint(tmp_path / "tl", sd, cfg, gpt2_dir)
    model = load_model(path, prepend_bos=False)
    assert model.checkpoint.weights_format == TRANSFORMER_LENS
    reference = tl_native_bridge(sd, cfg, model.tokenizer)
    ours, theirs = logits(model), logits(reference)
    assert theirs.abs().max() > 1  # not a model whose logits are all near zero
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_names_2l_in_transformer_lens_format_has_the_logits_of_its_safetensors(tmp_path):
    src = copy_checkpoint("names-2l", tmp_path / "hf")
    sd, cfg = gpt2_as_tl(load_file(src / "model.safetensors"), json.loads((src / "config.json").read_text()))
    model = load_model(write_tl_checkpoint(tmp_path / "tl", sd, cfg, src))
    reference = load_model(src)
    tokens = reference.to_tokens("Her name was Alex Hart . Tomorrow at lunch time Alex")
    assert model.cfg.default_prepend_bos == reference.cfg.default_prepend_bos
    torch.testing.assert_close(logits(model, tokens), logits(reference, tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("edit, message", [
    ({"normalization": "RMS"}, "normalization 'RMS' is not LayerNorm"),
    ({"shortformer_pos": True}, "positional embeddings are not the standard"),
    ({"d_head": 5}, "n_heads \\* d_head = 20 is not d_model = 32"),
    ({"act_fn": "solu_ln"}, "act_fn 'solu_ln'"),
])
def test_a_transformer_lens_architecture_gpt2_cannot_express_is_one_line(gpt2_dir, tmp_path, edit, message):
    cfg = tl_config()
    path = write_tl_checkpoint(tmp_path / "tl", random_tl_state_dict(cfg), {**cfg, **edit}, gpt2_dir)
    with pytest.raises(CheckpointError, match=f"no GPT-2 equivalent: .*{message}"):
        load_model(path)


@pytest.mark.parametrize("edit, message", [
    ("drop", "has no 'blocks.1.mlp.W_out'"),
    ("drop_ln", "has no 'blocks.0.ln1.w'"),
    ("unembed_bias", "non-zero unembedding bias"),
    ("extra", "holds blocks.9.attn.W_Q that this architecture has no place for"),
    ("shape", "wrong shape"),
])
def test_a_transformer_lens_state_dict_that_does_not_fit_is_one_line(gpt2_dir, tmp_path, edit, message):
    cfg = tl_config()
    sd = random_tl_state_dict(cfg)
    if edit == "drop":
        del sd["blocks.1.mlp.W_out"]
    elif edit == "drop_ln":
        del sd["blocks.0.ln1.w"]
    elif edit == "unembed_bias":
        sd["unembed.b_U"] = torch.ones(cfg["d_vocab"])
    elif edit == "extra":
        sd["blocks.9.attn.W_Q"] = sd["blocks.0.attn.W_Q"]
    else:
        sd["blocks.0.mlp.W_in"] = torch.zeros(cfg["d_model"], 7)
    path = write_tl_checkpoint(tmp_path / "tl", sd, cfg, gpt2_dir)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


# ---------------------------------------------------------------------------------------------
# The same verdicts from every format


def toml_value(v) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v)


def as_subject_file(subject: str, claims: list[str]) -> str:
    """The registry subject's claim tables (parameters and registered refutations) as an ad-hoc subject file."""
    from fixtures import subjects as registry

    entry = registry.load_registry()[subject]
    lines = ["[subjects.mine]", "[subjects.mine.params]"] + [f"{k} = {toml_value(v)}" for k, v in entry.params.items()]
    for cid in claims:
        lines.append(f"[subjects.mine.claims.{cid}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in entry.claims.get(cid, {}).items()]
    return "\n".join(lines) + "\n"


def claim_rows(pytester, out: str, *args: str) -> list[dict]:
    result = pytester.runpytest_inprocess(
        str(ROOT / "claims"), "-c", str(ROOT / "pytest.ini"), "--rootdir", str(ROOT), "-p", "no:cacheprovider",
        "--report-dir", str(pytester.path / out), *args)
    assert result.ret == 0, result.stdout.str()[-2000:]
    rows = json.loads((pytester.path / out / "claims.json").read_text())["results"]
    return [{k: r[k] for k in ("claim", "verdict", "measured", "checks", "params")} for r in rows]


ROOT = Path(__file__).resolve().parents[1]
PAIR_CLAIMS, NAMES_CLAIMS = ["RLHF-01", "RLHF-05", "RLHF-08"], ["IND-01", "IND-05", "IND-06", "IND-07"]


def test_bin_and_transformer_lens_checkpoints_give_the_verdicts_of_their_safetensors(pytester, tmp_path):
    from fixtures import zoo

    base, tuned = (as_bin(zoo.path(n), tmp_path / n) for n in ("review-lm", "review-lm-negative"))
    hf = zoo.path("names-2l")
    tl = write_tl_checkpoint(tmp_path / "names-tl", *gpt2_as_tl(load_file(hf / "model.safetensors"),
                                                                  json.loads((hf / "config.json").read_text())), hf)
    load_model(base), load_model(tl)  # the loaders' imports happen once, here, not in pytester's in-process runs
    for subject, claims, checkpoints in (("review-pair", PAIR_CLAIMS, [f"base={base}", f"tuned={tuned}"]),
                                         ("names-2l", NAMES_CLAIMS, [str(tl)])):
        (pytester.path / f"{subject}.toml").write_text(as_subject_file(subject, claims))
        marks = " or ".join(c.replace("-", "_") for c in claims)
        shipped = claim_rows(pytester, f"{subject}-zoo", "--subject", subject, "-m", marks)
        args = [a for c in checkpoints for a in ("--checkpoint", c)]
        converted = claim_rows(pytester, f"{subject}-converted", *args, "--subject-file", str(pytester.path / f"{subject}.toml"))
        assert len(shipped) == len(claims)
        assert converted == shipped
