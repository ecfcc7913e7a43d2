"""Checkpoint references -> TransformerBridge.

A reference is one of
- `SCHEME:NAME`: a checkpoint of a registered collection (`register_collection`): the suite's own
  zoo registers `zoo:NAME`, shipped with the suite and verified against its manifest;
- a local directory in Hugging Face format (config.json, safetensors weights, tokenizer files);
- a Hugging Face Hub id (`gpt2`, `lvwerra/gpt2-imdb`), read from the local Hub cache, and downloaded
  only where the Hub is reachable.

Everything ends in the same code path: a validated local directory booted with
`TransformerBridge.boot_transformers`. Weights may be safetensors; pickle files (`pytorch_model.bin`, sharded
or not), read with torch's weights-only loader, which cannot run code (a file that needs full unpickling
is refused unless `allow_pickle=True`); or TransformerLens' own format (a `.pth` HookedTransformer state
dict and its config), read as the equivalent GPT-2 (lib.tl_format).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lib import tl_format
from lib.errors import CheckpointError, CheckpointUnavailable, PickleRefused, SuiteError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "vocab.txt")
# How a checkpoint's weights are read, as provenance says it
SAFETENSORS = "safetensors"
PICKLE_WEIGHTS_ONLY = "pickle, read with torch's weights-only loader (tensors only; it cannot run code)"
PICKLE_FULL = "pickle, fully unpickled (allowed by --allow-pickle: unpickling can run code)"
TRANSFORMER_LENS = "TransformerLens state dict (.pth, weights-only loader), read as the equivalent GPT-2"
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "merges.txt"]
# fetched only where a repository has no safetensors weights, as many checkpoints of the seeds' era
PICKLED_WEIGHT_PATTERNS = ["pytorch_model*.bin", "*.pth"]


@dataclass
class Checkpoint:
    """A checkpoint resolved to a local directory, with what provenance needs to know of it."""

    ref: str
    path: Path
    source: str  # "zoo" | "local" | "hub"
    weight_files: list[Path] = field(default_factory=list)
    weights_format: str = SAFETENSORS

    @functools.cached_property
    def weights_sha256(self) -> str:
        return files_sha256(self.weight_files)


def files_sha256(files) -> str:
    """sha256 over the bytes of `files`, in order, read in chunks."""
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Resolution


# Named collections of checkpoints: `SCHEME:NAME` (or `SCHEME:NAME/SUBDIR`, e.g. a saved training step)
COLLECTIONS: dict[str, Callable[[str], Path]] = {}


def register_collection(scheme: str, locate: Callable[[str], Path]) -> None:
    """Resolve `scheme:NAME` references through `locate(NAME)`: a directory, or a SuiteError (KeyError for an
    unknown name) that says what is wrong."""
    COLLECTIONS[scheme] = locate


def _from_collection(ref: str, scheme: str, rest: str, allow_pickle: bool) -> Checkpoint:
    name, _, sub = rest.partition("/")
    try:
        root = COLLECTIONS[scheme](name)
    except KeyError as e:
        raise CheckpointError(str(e.args[0])) from None
    except SuiteError as e:
        raise CheckpointError(str(e)) from None
    path = root / sub if sub else root
    if not path.is_dir():
        have = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "no subdirectories"
        raise CheckpointError(f"{scheme} model {name} has no {sub!r}; it has: {have}")
    return _validated(ref, path, scheme, allow_pickle)


def resolve(ref: str | os.PathLike, *, allow_pickle: bool = False) -> Checkpoint:
    """Turn a reference into a validated local checkpoint directory."""
    ref = str(ref)
    scheme, colon, rest = ref.partition(":")
    if colon and scheme in COLLECTIONS:
        return _from_collection(ref, scheme, rest, allow_pickle)
    if colon and scheme.isidentifier() and len(scheme) > 1 and not Path(ref).exists():
        known = ", ".join(sorted(COLLECTIONS)) or "none"
        raise CheckpointError(f"checkpoint {ref!r}: no collection {scheme!r} is registered (registered: {known}); "
                              f"the suite's zoo registers 'zoo' when fixtures.zoo is imported")
    path = Path(ref).expanduser()
    if path.is_dir():
        return _validated(ref, path, "local", allow_pickle)
    looks_like_path = ref.startswith((".", "/", "~")) or os.sep in ref.rstrip(os.sep) and not HUB_ID.match(ref)
    if looks_like_path or path.exists() or not HUB_ID.match(ref):
        what = "is a file, not a directory" if path.is_file() else "does not exist"
        raise CheckpointError(
            f"checkpoint {ref!r} {what}: pass a directory holding config.json, the weights and the "
            f"tokenizer, as written by model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
        )
    try:
        snapshot = _hub_snapshot(ref)
    except CheckpointUnavailable as e:
        if "/" in ref and path.parent.is_dir():  # 'runs/model-typo' is also a Hub id: say both readings
            raise CheckpointUnavailable(f"there is no directory {path.resolve()}, and as a Hub id: {e}") from None
        raise
    return _validated(ref, snapshot, "hub", allow_pickle)


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


@functools.lru_cache(maxsize=1)
def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_dir()
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    if not hub_reachable():
        raise CheckpointUnavailable(
            f"{repo_id} is not in the local Hub cache ({cache}) and the Hugging Face Hub is out of "
            f"reach; copy it into that cache (or set HF_HOME), or pass a local copy with --checkpoint DIR"
        )
    try:
        snapshot = Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=HUB_PATTERNS))
        if not any(snapshot.glob("*.safetensors")):
            snapshot = Path(snapshot_download(repo_id, cache_dir=cache,
                                              allow_patterns=HUB_PATTERNS + PICKLED_WEIGHT_PATTERNS))
        return snapshot
    except Exception as e:  # network errors come in many types; the message is what matters
        raise CheckpointUnavailable(f"{repo_id} could not be downloaded from the Hub: {e}") from None


# ---------------------------------------------------------------------------------------------
# Validation


def _validated(ref: str, path: Path, source: str, allow_pickle: bool) -> Checkpoint:
    config = path / "config.json"
    if not config.is_file():
        raise CheckpointError(
            f"{path} has no config.json, so it is not a Hugging Face checkpoint; write one with "
            f"model.save_pretrained({str(path)!r})"
        )
    try:
        cfg = json.loads(config.read_text())
    except ValueError as e:
        raise CheckpointError(f"{config} is not valid JSON ({e}); re-save the model with save_pretrained") from None
    weights, weights_format = _weight_files(path, "model.safetensors"), SAFETENSORS
    if isinstance(cfg, dict) and tl_format.is_tl_config(cfg):
        weights, weights_format = [tl_format.weights_file(path)], TRANSFORMER_LENS
    elif not weights:
        weights = _weight_files(path, "pytorch_model.bin")
        if not weights:
            raise CheckpointError(
                f"{path} holds no weights (no model.safetensors, no sharded safetensors index, no "
                f"pytorch_model.bin); save them with model.save_pretrained({str(path)!r})"
            )
        needs_unpickling = [f for f in weights if not _weights_only_loadable(f)]
        if needs_unpickling and not allow_pickle:
            raise PickleRefused(
                f"{needs_unpickling[0]} holds objects other than tensors, which torch's weights-only loader "
                f"refuses; unpickling it fully can run arbitrary code. Save a plain state dict (or safetensors: "
                f"model.save_pretrained(DIR)), or pass --allow-pickle if you trust where it came from"
            )
        weights_format = PICKLE_FULL if needs_unpickling else PICKLE_WEIGHTS_ONLY
    else:
        for f in weights:
            check_safetensors(f)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (path / name).is_file():
            try:
                json.loads((path / name).read_text())
            except (ValueError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{path / name} is not valid JSON ({e}); save the tokenizer again with "
                                      f"tokenizer.save_pretrained({str(path)!r})") from None
    if not any((path / f).exists() for f in TOKENIZER_FILES):
        raise CheckpointError(
            f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer beside "
            f"the weights with tokenizer.save_pretrained({str(path)!r})"
        )
    return Checkpoint(ref=ref, path=path, source=source, weight_files=weights, weights_format=weights_format)


def _weight_files(path: Path, single: str) -> list[Path]:
    """`single` (model.safetensors, pytorch_model.bin), or the shards its index (`single`.index.json) names."""
    if (path / single).exists():
        return [path / single]
    index = path / f"{single}.index.json"
    if not index.exists():
        return []
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{index} is not a valid weights index ({e!r}); re-save the model") from None
    missing = [s for s in shards if not (path / s).exists()]
    if missing:
        raise CheckpointError(f"{index} names shards that are missing: {', '.join(missing)}")
    return [path / s for s in shards]


def _weights_only_loadable(file: Path) -> bool:
    """Whether torch's weights-only loader reads `file` (tensors and plain containers only: no code runs).
    A file that is not a pickle at all is a CheckpointError."""
    import pickle

    try:
        try:
            torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            torch.load(file, map_location="cpu", weights_only=True)  # a file of torch's legacy format
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):  # a class or function: only full unpickling rebuilds it
            return False
        said = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
        raise CheckpointError(f"{file} could not be read: it is not a pickle of tensors "
                              f"({said.group(1) if said else str(e).splitlines()[0]}); copy or download it again") from None
    except Exception as e:
        raise CheckpointError(f"{file} could not be read: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                              f"copy or download it again") from None
    return True


def check_safetensors(file: Path) -> None:
    """Raise CheckpointError if `file` is not a whole safetensors file (truncated, corrupt header)."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{file} is truncated: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(
                f"{file} is truncated or corrupt: its header claims {n} bytes but the file has {size}"
            )
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{file} is corrupt: its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file} is corrupt: its header is not a JSON object")
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and "data_offsets" in t]
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        raise CheckpointError(
            f"{file} is truncated: its header declares {expected} bytes of data, the file has {size}; "
            f"copy or download it again"
        )


# ---------------------------------------------------------------------------------------------
# Booting


def load_model(
    ref: str | os.PathLike | Checkpoint,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
    compatibility_mode: bool = False,
    prepend_bos: bool | None = None,
):
    """A TransformerBridge (eval mode) for `ref`; `bridge.checkpoint` is the resolved Checkpoint.

    `compatibility_mode=True` folds LayerNorm and centres weights as HookedTransformer did (exact
    direct logit attribution); it is irreversible, so it is a load-time choice. `prepend_bos=None`
    prepends BOS where the tokenizer defines one and the architecture's adapter does so.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    ckpt = ref if isinstance(ref, Checkpoint) else resolve(ref, allow_pickle=allow_pickle)
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} was asked for but no CUDA device is available; use --device cpu")
    hf_model = None
    if ckpt.weights_format == TRANSFORMER_LENS:
        tokenizer = AutoTokenizer.from_pretrained(str(ckpt.path))
        hf_model = tl_format.load_gpt2(ckpt.path, json.loads((ckpt.path / "config.json").read_text()), device, dtype,
                                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    elif ckpt.weights_format == PICKLE_FULL:  # allowed by the caller: transformers reads .bin weights-only
        from transformers import AutoConfig

        state = {}
        for f in ckpt.weight_files:
            state.update(dict(torch.load(f, map_location="cpu", weights_only=False)))
        check_weights(ckpt.path, state_dict=state)
        with _quiet_transformers():
            hf_model = _causal_lm_class(ckpt.path).from_pretrained(
                None, config=AutoConfig.from_pretrained(str(ckpt.path)), state_dict=state, dtype=dtype).to(device)
    else:
        check_weights(ckpt.path)
    try:
        with _quiet_transformers():
            if hf_model is None:
                bridge = TransformerBridge.boot_transformers(str(ckpt.path), device=device, dtype=dtype)
            else:
                tokenizer = AutoTokenizer.from_pretrained(str(ckpt.path))
                bridge = TransformerBridge.boot_transformers(str(ckpt.path), hf_model=hf_model, tokenizer=tokenizer,
                                                             device=device, dtype=dtype)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path} could not be loaded: {type(e).__name__}: {e}") from None
    tok = bridge.tokenizer
    if tok is None or len(tok) == 0:
        raise CheckpointError(f"{ckpt.path}: the tokenizer loaded empty; save it with tokenizer.save_pretrained(DIR)")
    # The bridge stands in EOS for a missing BOS; a vocabulary without BOS gets no BOS prepended.
    if prepend_bos is not None:
        bridge.cfg.default_prepend_bos = prepend_bos
    elif saved_bos_token(ckpt.path) is None:
        bridge.cfg.default_prepend_bos = False
    if compatibility_mode:
        bridge.enable_compatibility_mode()
    bridge.eval()
    in_fresh_memory(bridge)
    bridge.checkpoint = ckpt
    return bridge


@torch.no_grad()
def in_fresh_memory(model: torch.nn.Module) -> None:
    """Move every parameter and buffer into memory of its own, keeping the views that share one (a fused
    qkv and its q, k, v). Weights mapped from a safetensors file sit at whatever offset the file gives them,
    and kernels take other paths on other alignments: the same weights would give other last bits, and so
    other figures, read from a .bin or a safetensors file."""
    fresh: dict[int, torch.UntypedStorage] = {}
    for t in (*model.parameters(), *model.buffers()):
        old = t.untyped_storage()
        new = fresh.setdefault(old.data_ptr(), old.clone())
        t.data = torch.empty(0, dtype=t.dtype, device=t.device).set_(new, t.storage_offset(), t.size(), t.stride())


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' warnings and progress bars off while it loads (the suite reports problems itself)."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()


def check_weights(path: Path, *, state_dict: dict | None = None) -> None:
    """CheckpointError unless the weight files (or `state_dict`, read from them) hold exactly the tensors the
    architecture of config.json reads, in its shapes. transformers fills a missing tensor (a layer too many
    in the config, a tensor dropped in a conversion) with random values and ignores unexpected ones, without
    a word."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        cls, source, extra = AutoModelForCausalLM, str(path), {}
        if state_dict is not None:
            cls, source, extra = _causal_lm_class(path), None, {"config": AutoConfig.from_pretrained(str(path)),
                                                                  "state_dict": state_dict}
        with _quiet_transformers():
            try:  # on the meta device: keys and shapes are compared, no tensor is read
                _, info = cls.from_pretrained(source, output_loading_info=True, device_map="meta", **extra)
            except RuntimeError as e:
                if "ignore_mismatched_sizes" not in str(e):
                    raise CheckpointError(f"{path} could not be loaded: {type(e).__name__}: {e}") from None
                with contextlib.redirect_stdout(io.StringIO()):  # transformers prints its load report
                    _, info = cls.from_pretrained(
                        source, output_loading_info=True, device_map="meta", ignore_mismatched_sizes=True, **extra)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} could not be loaded: {type(e).__name__}: {e}") from None
    problems = []
    if info.get("missing_keys"):
        problems.append(f"config.json asks for {_names(info['missing_keys'])} that the weights lack")
    if info.get("unexpected_keys"):
        problems.append(f"the weights hold {_names(info['unexpected_keys'])} that config.json has no place for")
    if info.get("mismatched_keys"):
        shapes = [f"{k} {tuple(a)} in the file, {tuple(b)} in the model" for k, a, b in sorted(info["mismatched_keys"])[:3]]
        problems.append(f"{len(info['mismatched_keys'])} tensor(s) of another shape ({'; '.join(shapes)})")
    if problems:
        raise CheckpointError(
            f"{path}: the weights do not fit the architecture in config.json: {'; '.join(problems)}; make "
            f"config.json describe the saved model (n_layer, sizes), or re-save both with save_pretrained")


def _causal_lm_class(path: Path):
    """The causal-LM class of the architecture in `path`'s config.json."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    return MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(str(path)))]


def _names(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:3])
    return f"{len(keys)} tensor(s) ({shown}{', ...' if len(keys) > 3 else ''})"


def saved_bos_token(path: Path) -> str | None:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path)).bos_token


def tokenizer_info(bridge) -> dict:
    tok = bridge.tokenizer
    return {
        "prepend_bos": bool(bridge.cfg.default_prepend_bos),
        "bos_token": tok.bos_token,
        "vocab_size": len(tok),
    }
