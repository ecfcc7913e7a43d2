"""Activation patching on any TransformerBridge, batched and started at the patched layer.

Direction: every function runs `tokens` through `model` (the recipient: the corrupted prompt, or the base
model) and overwrites the named activations with the same slices of `donor_cache` (the clean run, or the
tuned model on the same tokens). Sweeps return the metric of each patched run, in the layout of their
`transformer_lens.patching` counterparts.

Patching every position of a layer's residual stream with the donor's activations gives the donor's run
(clean into corrupted gives the clean run); patching position p never changes the logits before p.

A metric maps one run's logits [batch, pos, d_vocab] to a scalar, as in `transformer_lens.patching`. A
metric with `batched = True` (see `lib.metrics.Metric`) is called once on a stack of runs
[runs, batch, pos, d_vocab] and returns [runs]; any other metric is called once per run.

How the runs are made fast, without changing their numbers:
- many patched runs share one batch;
- a run patched at layer L starts at block L from the recipient's cached residual stream;
- a run whose patches first change a value at position p (a patch at every position of a prompt pair
  that differs from p on writes the recipient's own values before p) computes positions p.. only:
  attention reads the keys and values of earlier positions from the recipient's run, since nothing
  before p can change (causality); the logits of earlier positions are the recipient's;
- a run whose patches copy values identical to the recipient's is the recipient's run.
On first use per model and token shape the fast path, and separately the skipping of earlier positions,
is checked against the model's own forward pass (within float rounding at the logits' scale, see
`check_tolerance`); where one does not reproduce it, runs fall back to computing every position, or to a
batched full forward pass with hooks, and `Recipient.why_slow` says why.
"""
from __future__ import annotations

import difflib
import inspect
import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from lib.errors import HookNameError, HookNotFired, ShapeMismatch

if TYPE_CHECKING:
    from transformer_lens import ActivationCache

Index = tuple
Patch = tuple[str, Index]
Donor = Union[Mapping[str, Tensor], "ActivationCache"]  # or a dict hook name -> activation
MetricFn = Callable[[Tensor], Tensor]

_LAYER = re.compile(r"^blocks\.(\d+)\.")


# ---------------------------------------------------------------------------------------------
# Hook names


def hook_names(model) -> list[str]:
    return list(model.hook_dict)


def check_hook_names(model, names: Iterable[str]) -> None:
    """HookNameError listing the closest names for any name `model` does not have."""
    known = model.hook_dict
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=6, cutoff=0.6)
            hint = f"closest: {', '.join(close)}" if close else "see model.hook_dict for the names"
            raise HookNameError(f"unknown hook name {name!r} on {model.cfg.architecture or 'this model'}; {hint}")


def layer_of(name: str) -> int | None:
    """The block a hook lives in, or None for model-level hooks."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


# Activations whose query-position axis is known: [batch, pos, ...], or [batch, head, dest, src] for
# attention scores and patterns. Patches elsewhere recompute every position.
_POS_LAYOUT = re.compile(
    r"(hook_resid_(pre|mid|post)|hook_(attn|mlp)_out|attn\.hook_[qkvz]|attn\.hook_result|mlp\.hook_(pre|post)"
    r"|ln\d\.hook_(scale|normalized)|hook_(attn|q|k|v|mlp)_in(put)?|hook_pattern|hook_attn_scores)$"
)


def pos_dim(name: str) -> int | None:
    """The query-position axis of an activation, None where its layout is not known."""
    if not _POS_LAYOUT.search(name):
        return None
    return 2 if name.endswith(("hook_pattern", "hook_attn_scores")) else 1


def _entry(model, name: str) -> int:
    """The block a run must start at to apply a patch at `name` (-1: embeddings; n_layers: after the blocks)."""
    layer = layer_of(name)
    if layer is not None:
        return layer
    if name.startswith(("ln_final.", "unembed.", "hook_unembed")):
        return model.cfg.n_layers
    return -1


# ---------------------------------------------------------------------------------------------
# Donor activations


def donor_activation(donor: Donor, name: str) -> Tensor:
    try:
        return donor[name]
    except KeyError:
        raise HookNameError(
            f"the donor cache holds no activation {name!r}; cache it (names_filter) before patching from it"
        ) from None


def check_same_shape(recipient_model, donor_model) -> None:
    """ShapeMismatch naming every shape field where two models differ (cross-model patching)."""
    fields = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_key_value_heads")
    diffs = [
        f"{f}: {getattr(recipient_model.cfg, f, None)} vs {getattr(donor_model.cfg, f, None)}"
        for f in fields
        if getattr(recipient_model.cfg, f, None) != getattr(donor_model.cfg, f, None)
    ]
    if diffs:
        raise ShapeMismatch(
            "cross-model patching needs models of the same shape; recipient vs donor differ in "
            + "; ".join(diffs)
        )


def donor_cache(donor_model, tokens: Tensor, recipient_model=None, names: Callable[[str], bool] | None = None):
    """The donor's activations on `tokens` (checked against the recipient's shape when one is given)."""
    if recipient_model is not None and recipient_model is not donor_model:
        check_same_shape(recipient_model, donor_model)
    with torch.no_grad():
        _, cache = donor_model.run_with_cache(tokens, names_filter=names or _default_names)
    return cache


_CACHED = re.compile(
    r"(hook_resid_(pre|mid|post)|hook_(attn|mlp)_out|attn\.hook_([qkvz]|pattern|attn_scores)|mlp\.hook_(pre|post)"
    r"|ln\d\.hook_(scale|normalized)|^hook_(pos_)?embed|^ln_final\.hook_scale)$"
)


def _default_names(name: str) -> bool:
    """The activations a patching experiment reads (no hook_in/hook_out duplicates, no gated-off hooks)."""
    return bool(_CACHED.search(name))


# ---------------------------------------------------------------------------------------------
# The recipient run: what every patched run starts from


class _KV:
    """Stands in for the key/value cache a block hands its attention: records the run's keys and values,
    or puts a recorded prefix in front of the keys and values of the positions being computed."""

    def __init__(self, prefix: tuple[Tensor, Tensor] | None = None):
        self.prefix = prefix
        self.seen: tuple[Tensor, Tensor] | None = None
        self.uses = 0

    def update(self, k: Tensor, v: Tensor, *args, **kwargs):
        self.uses += 1
        if self.prefix is None:
            self.seen = (k, v)
            return k, v
        reps = k.shape[0] // self.prefix[0].shape[0]
        pk, pv = (t.repeat(reps, *([1] * (t.ndim - 1))) if reps > 1 else t for t in self.prefix)
        return torch.cat([pk, k], dim=-2), torch.cat([pv, v], dim=-2)

    def get_seq_length(self, *args, **kwargs) -> int:
        return 0 if self.prefix is None else self.prefix[0].shape[-2]


def _is_kv_cache(value) -> bool:
    try:
        from transformers.cache_utils import Cache
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, Cache)


# The names under which attention layers read the key/value cache. A block may name its own slot otherwise
# (GPT-2 in transformers 5.24: `cache`) and pass it on to its attention under that name only; the recorder
# then also goes to the attention as `layer_past`, through the block's **kwargs (not as `past_key_values`,
# which such blocks rename to their own slot on the way in).
_KV_READ_AS = ("past_key_values", "layer_past")


def _kv_names(slots: list[str]) -> list[str]:
    """Every name a block's key/value cache is handed over under: its own slots, and one the attention reads."""
    if not slots or any(s in _KV_READ_AS for s in slots):
        return slots
    return slots + ["layer_past"]


def _kv_problem(n_pos: int, slots: list[list[str]], uses: list[int]) -> str:
    """Why positions cannot be skipped with the recorded keys and values, or "" where they can be tried."""
    if n_pos < 2:
        return "a single position leaves nothing before it to reuse"
    if not all(slots):
        return "the blocks were handed no key/value cache"
    if not all(uses):
        return "the attention layers never used the key/value cache handed to them"
    if any(u > 1 for u in uses):
        return "an attention layer used the key/value cache handed to it more than once per call"
    return ""


@dataclass
class _Run:
    """One patched run: its patches, the block it starts at, the first position it can change."""

    patches: list[Patch]
    entry: int
    start: int
    index: int = 0  # where its result goes


@dataclass
class Recipient:
    """The unpatched run of `model` on `tokens`, with what patched runs start from."""

    model: object
    tokens: Tensor
    logits: Tensor
    acts: dict[str, Tensor]
    block_kwargs: list[dict] = field(default_factory=list)
    kv_slots: list[list[str]] = field(default_factory=list)
    kv: list[tuple[Tensor, Tensor] | None] = field(default_factory=list)
    fast: bool = False
    truncate: bool = False
    why_slow: str = ""  # never empty while fast or truncate is off

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_pos(self) -> int:
        return self.tokens.shape[1]

    def entering(self, layer: int) -> Tensor:
        n_layers = self.model.cfg.n_layers
        if layer < n_layers:
            return self.acts[f"blocks.{layer}.hook_resid_pre"]
        return self.acts[f"blocks.{n_layers - 1}.hook_resid_post"]


def _bind(block, args: tuple, kwargs: dict) -> tuple[str, dict]:
    """The block's call as (name of its hidden-states argument, every other argument by name)."""
    sig = inspect.signature(block.original_component.forward)
    bound = sig.bind_partial(*args, **kwargs).arguments
    params = list(sig.parameters.values())
    first = params[0].name
    out = {}
    for name, value in bound.items():
        if name == first:
            continue
        if sig.parameters[name].kind == inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return first, out


def recipient_run(model, tokens: Tensor, names: Iterable[str] = ()) -> Recipient:
    """Run `model` on `tokens` once, caching the residual stream entering every block, the activations
    named in `names`, every block's call arguments and every attention layer's keys and values."""
    n_layers = model.cfg.n_layers
    wanted = {f"blocks.{l}.hook_resid_pre" for l in range(n_layers)} | {f"blocks.{n_layers - 1}.hook_resid_post"}
    wanted |= set(names)
    blocks = list(model.blocks) if hasattr(model, "blocks") else []
    calls: list = [None] * len(blocks)
    recorders: list = [None] * len(blocks)

    def pre_hook(layer):
        def fn(module, args, kwargs):
            try:
                first, named = _bind(module, args, kwargs)
            except (TypeError, ValueError, AttributeError):
                return None
            slots = _kv_names([k for k, v in named.items() if _is_kv_cache(v)])
            recorders[layer] = _KV()
            for k in slots:
                named[k] = recorders[layer]
            hidden = args[0] if args else kwargs[first]
            calls[layer] = ({k: v for k, v in named.items() if k not in slots}, slots)
            return (hidden,), named

        return fn

    def cached_run():
        with torch.no_grad():
            return model.run_with_cache(tokens, names_filter=lambda n: n in wanted)

    why = ""
    handles = [b.register_forward_pre_hook(pre_hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        logits, cache = cached_run()
    except Exception as e:  # recording the block calls broke the forward pass: run it plainly
        for h in handles:
            h.remove()
        calls, why = [None], f"recording the block calls failed ({type(e).__name__}: {e})"
        logits, cache = cached_run()
    finally:
        for h in handles:
            h.remove()
    rec = Recipient(model=model, tokens=tokens, logits=logits.detach(), acts={k: cache[k] for k in cache.keys()})
    if blocks and all(c is not None for c in calls) and hasattr(model, "ln_final") and hasattr(model, "unembed"):
        rec.block_kwargs = [c[0] for c in calls]
        rec.kv_slots = [c[1] for c in calls]
        rec.kv = [r.seen if r.uses == 1 else None for r in recorders]
        _verify(rec, _kv_problem(rec.n_pos, rec.kv_slots, [r.uses for r in recorders]))
    else:
        rec.why_slow = why or "the blocks could not be called one by one"
    return rec


# Whether the fast path reproduces a model's own forward pass, per model and token shape: a property of
# the architecture, checked once.
_VERIFIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fast_path_status(model, tokens: Tensor) -> tuple[bool, bool, str] | None:
    """(fast, truncate, why_slow) as checked for `model` on tokens of this shape; None before its first run."""
    shape = tuple(tokens.shape) if tokens.ndim == 2 else (1, tokens.shape[-1])
    return _VERIFIED.get(model, {}).get(shape)


def _verify(rec: Recipient, kv_problem: str) -> None:
    known = _VERIFIED.setdefault(rec.model, {})
    key = tuple(rec.tokens.shape)
    if key not in known:
        _self_check(rec, kv_problem)
        known[key] = (rec.fast, rec.truncate, rec.why_slow)
    rec.fast, rec.truncate, rec.why_slow = known[key]


# The fast path must reproduce the model's own logits up to float rounding at their scale: the largest
# absolute difference may be _CHECK_FACTOR roundings of max |logits|, one rounding being torch.testing's
# relative tolerance for the dtype (float32: 1.3e-6, about 11 eps). Kernels that batch, block or vectorise
# a computation differently round differently, and the differences add up over each layer's sums and
# through the later layers: on 3- to 12-layer GPT-2 and GPT-NeoX models (up to d_model 768) they stay
# within 1.2 roundings, under every CPU kernel setting tried. A wrong, shifted or missing key/value prefix
# is off by 1.8e4 roundings or more (2.4% of the scale). 100 sits between the two with a wide margin on each
# side. Half precision rounds so coarsely that 100 roundings would pass anything: there the limit is 1% of
# the scale, below every fault measured, and a model that cannot meet it runs the plain forward pass.
_CHECK_RTOL = {torch.float16: 1e-3, torch.bfloat16: 1.6e-2, torch.float32: 1.3e-6, torch.float64: 1e-7}
_CHECK_FACTOR = 100.0
_CHECK_MAX_RTOL = 1e-2


def check_tolerance(reference: Tensor) -> float:
    """The largest absolute difference from `reference` that counts as float rounding, relative to its scale."""
    rtol = min(_CHECK_FACTOR * _CHECK_RTOL.get(reference.dtype, _CHECK_RTOL[torch.float32]), _CHECK_MAX_RTOL)
    return rtol * float(reference.abs().max())


def mismatch(got: Tensor, reference: Tensor) -> str:
    """How far `got` is from reproducing `reference`; "" where it does, within check_tolerance."""
    if got.shape != reference.shape:
        return f"shape {tuple(got.shape)} instead of {tuple(reference.shape)}"
    err, tol = float((got - reference).abs().max()), check_tolerance(reference)
    return "" if err <= tol else f"max |difference| {err:.2e} > tolerance {tol:.2e}"


def _self_check(rec: Recipient, kv_problem: str) -> None:
    """Turn the fast path on only where it reproduces the model's own logits."""
    with torch.no_grad():
        plain = rec.model(rec.tokens)
    off = mismatch(rec.logits, plain)
    if off:
        rec.why_slow = f"recording the block calls changed the model's logits ({off})"
        return
    rec.fast, rec.why_slow = _path_check(rec, "fast", 0)
    if not rec.fast:
        return
    if kv_problem:
        rec.why_slow = f"truncate path off: {kv_problem}"
        return
    rec.truncate, rec.why_slow = _path_check(rec, "truncate", rec.n_pos // 2)


def _path_check(rec: Recipient, flag: str, start: int) -> tuple[bool, str]:
    """Whether the unpatched run through the `flag` path, computing positions start.., gives the recipient's
    logits (with the reason where it does not)."""
    setattr(rec, flag, True)
    try:
        logits = _run_blocks(rec, [_Run(patches=[], entry=0, start=start)], donor={}, start=start)[0]
        off = mismatch(logits, rec.logits)
    except Exception as e:  # any failure of the fast path means: use the plain forward pass
        off = f"{type(e).__name__}: {e}"
    setattr(rec, flag, not off)
    return not off, (f"{flag} path did not reproduce the model's logits ({off})" if off else "")


# ---------------------------------------------------------------------------------------------
# Running patched runs


def _shift(index: Index, dim: int, start: int, n_pos: int) -> Index:
    """`index` into positions start.. instead of 0..; positions before `start` drop out (a run starts at
    the first position its patches change, so they write the recipient's own values there)."""
    if start == 0:
        return index
    index = tuple(index)
    e = index[dim]
    if isinstance(e, slice):
        kept = range(n_pos)[e]  # torch slices step forwards
        kept = kept[next((i for i, p in enumerate(kept) if p >= start), len(kept)):]
        e = slice(kept.start - start, kept.stop - start, kept.step) if kept else slice(0, 0)
    elif isinstance(e, int) and not isinstance(e, bool):
        p = e if e >= 0 else n_pos + e
        e = p - start if p >= start else slice(0, 0)
    else:
        raise ValueError(f"position index {e!r} cannot be shifted; patch it without position truncation")
    return index[:dim] + (e,) + index[dim + 1 :]


def _first_pos(index: Index, name: str, n_pos: int) -> int:
    """The first position a patch can change: its position if an integer, else 0."""
    dim = pos_dim(name)
    if dim is None or not isinstance(index, tuple) or len(index) <= dim or Ellipsis in index[:dim]:
        return 0
    e = index[dim]
    if isinstance(e, int) and not isinstance(e, bool):
        return e if e >= 0 else n_pos + e
    return 0


class _Changes:
    """Where the donor's values differ from the recipient's, per hook name (computed on first use)."""

    def __init__(self, rec: Recipient, donor: Donor):
        self.rec, self.donor, self.differs = rec, donor, {}

    def first_pos(self, index: Index, name: str, n_pos: int) -> int:
        """The first position at which the patch writes a value other than the recipient's own (n_pos where
        it writes none): the positions before it are copies of the recipient's, so a run need not compute
        them. Falls back to `_first_pos` where the index cannot be laid over the activation."""
        dim = pos_dim(name)
        if dim is None:
            return 0
        if name not in self.differs:
            self.differs[name] = donor_activation(self.donor, name) != self.rec.acts[name]  # NaN counts as a change
        differs = self.differs[name]
        try:
            where = torch.zeros_like(differs)
            where[index] = True
        except (IndexError, TypeError, RuntimeError):
            return _first_pos(index, name, n_pos)
        per_pos = (differs & where).movedim(dim, 0).reshape(differs.shape[dim], -1).any(1).nonzero()
        return int(per_pos[0]) if len(per_pos) else n_pos


def _patch_hooks(rec: Recipient, runs: list[_Run], donor: Donor, start: int, fired: set) -> list:
    """One forward hook per patched hook name; run i owns rows i*batch..(i+1)*batch of the batch."""
    by_name: dict[str, list[tuple[int, Index]]] = {}
    for i, run in enumerate(runs):
        for name, index in run.patches:
            by_name.setdefault(name, []).append((i, index))
    b = rec.batch
    hooks = []
    for name, items in by_name.items():
        dim = pos_dim(name) if start else None
        source = donor_activation(donor, name)
        source = source.narrow(dim, start, source.shape[dim] - start) if start else source
        shifted = [(i, _shift(index, dim, start, rec.n_pos)) for i, index in items]
        last = max(i for i, _ in items)

        def hook(act, hook=None, _name=name, _source=source, _items=shifted, _last=last):
            fired.add(_name)
            if act.shape[0] < (_last + 1) * b:
                raise ValueError(f"{_name} has no batch axis first ({tuple(act.shape)}); it cannot be patched per run")
            for i, index in _items:
                act[i * b : (i + 1) * b][index] = _source[index]
            return act

        hooks.append((name, hook))
    return hooks


def _tile(x, reps: int, batch: int):
    if isinstance(x, Tensor) and batch > 1 and x.ndim and x.shape[0] == batch and reps > 1:
        return x.repeat(reps, *([1] * (x.ndim - 1)))
    if isinstance(x, tuple):
        return tuple(_tile(t, reps, batch) for t in x)
    return x


def _sliced(name: str, value, start: int):
    """A recorded block argument restricted to query positions start.."""
    if start == 0 or value is None:
        return value
    if name in ("position_ids", "cache_position") and isinstance(value, Tensor):
        return value[..., start:]
    if name == "position_embeddings" and isinstance(value, tuple):
        return tuple(t[..., start:, :] for t in value)
    if name == "attention_mask" and isinstance(value, Tensor) and value.ndim == 4:
        return value[..., start:, :]
    return value


def _block_kwargs(rec: Recipient, layer: int, start: int, reps: int) -> dict:
    kw = {k: _tile(_sliced(k, v, start), reps, rec.batch) for k, v in rec.block_kwargs[layer].items()}
    if start and rec.truncate:
        k, v = rec.kv[layer]
        prefix = _KV((k[..., :start, :], v[..., :start, :]))
        for slot in rec.kv_slots[layer]:
            kw[slot] = prefix
    else:
        for slot in rec.kv_slots[layer]:
            kw[slot] = None
    if "use_cache" in kw:
        kw["use_cache"] = False
    return kw


def _run_blocks(
    rec: Recipient, runs: list[_Run], donor: Donor, start: int, final_only: bool = False
) -> Float[Tensor, "runs batch pos d_vocab"]:
    """Patched runs (sorted by entry block), each starting at its entry block, computing positions start..;
    with `final_only`, logits of the last position alone ([runs, batch, 1, d_vocab])."""
    model, b, n = rec.model, rec.batch, rec.n_pos
    n_layers = model.cfg.n_layers
    fired: set = set()
    hooks = _patch_hooks(rec, runs, donor, start, fired)
    resid, active = None, 0
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        for layer in range(runs[0].entry, n_layers + 1):
            entering = sum(1 for r in runs[active:] if r.entry == layer)
            if entering:
                x = rec.entering(layer)[:, start:]
                x = x.repeat(entering, 1, 1) if entering > 1 else x
                resid = x.clone() if resid is None else torch.cat([resid, x])
                active += entering
            if layer == n_layers:
                break
            out = model.blocks[layer](resid, **_block_kwargs(rec, layer, start, active))
            resid = out[0] if isinstance(out, tuple) else out
        if final_only:
            resid = resid[:, -1:]
        logits = model.unembed(model.ln_final(resid))
    _check_fired(hooks, fired)
    if final_only:
        return logits.reshape(len(runs), b, 1, -1)
    logits = logits.reshape(len(runs), b, n - start, -1)
    if start:
        prefix = rec.logits[:, :start].expand(len(runs), -1, -1, -1)
        logits = torch.cat([prefix, logits], dim=2)
    return logits


def _run_hooked(rec: Recipient, runs: list[_Run], donor: Donor) -> Float[Tensor, "runs batch pos d_vocab"]:
    """Patched runs as one batched forward pass of the whole model, patches applied by hooks."""
    model = rec.model
    fired: set = set()
    hooks = _patch_hooks(rec, runs, donor, 0, fired)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(rec.tokens.repeat(len(runs), 1))
    _check_fired(hooks, fired)
    return logits.reshape(len(runs), rec.batch, rec.n_pos, -1)


def _never_ran(names: Sequence[str]) -> str:
    return (
        f"hook(s) {', '.join(names)} never ran in the forward pass, so patching there would change nothing; "
        f"for attn.hook_result call model.set_use_attn_result(True) first, for hook_mlp_in / hook_attn_in / "
        f"hook_q_input set model.cfg.use_hook_mlp_in / use_attn_in / use_split_qkv_input"
    )


def _check_fired(hooks: list, fired: set) -> None:
    missing = sorted({name for name, _ in hooks} - fired)
    if missing:
        raise HookNotFired(_never_ran(missing))


def _apply_metric(metric: MetricFn, logits: Tensor) -> Tensor:
    if getattr(metric, "batched", False):
        out = torch.as_tensor(metric(logits))
        want = tuple(logits.shape[:2]) if getattr(metric, "per_prompt", False) else (logits.shape[0],)
        if out.shape != want:
            raise ValueError(f"a batched metric must return one value per run{' and prompt' if len(want) == 2 else ''} "
                             f"{want}, got {tuple(out.shape)}")
        return out.float()
    values = []
    for run_logits in logits:
        v = torch.as_tensor(metric(run_logits))
        if v.numel() != 1:
            raise ValueError(f"the metric must return a scalar per run, got shape {tuple(v.shape)}")
        values.append(v.reshape(()).float())
    return torch.stack(values)


def _is_noop(rec: Recipient, donor: Donor, run: _Run) -> bool:
    return all(torch.equal(donor_activation(donor, name)[index], rec.acts[name][index]) for name, index in run.patches)


def _chunks(runs: list[_Run], rec: Recipient, min_tokens: int, max_tokens: int) -> list[tuple[int, list[_Run]]]:
    """Runs grouped so that each group computes positions from its smallest start: runs of equal start
    together, groups merged while too small to use the matrix units well, split where memory is bounded."""
    n, b = rec.n_pos, rec.batch
    chunks: list[tuple[int, list[_Run]]] = []
    current: list[_Run] = []
    start = n
    for run in sorted(runs, key=lambda r: -r.start):
        merged = min(start, run.start)
        if current and run.start < start and len(current) * b * (n - start) >= min_tokens:
            chunks.append((start, current))
            current, merged = [], run.start
        elif current and (len(current) + 1) * b * (n - merged) > max_tokens:
            chunks.append((start, current))
            current, merged = [], run.start
        current.append(run)
        start = merged
    if current:
        chunks.append((start, current))
    return chunks


def run_patches(
    model,
    tokens: Int[Tensor, "batch pos"],
    donor: Donor,
    runs: Sequence[Sequence[Patch]],
    metric: MetricFn | None = None,
    *,
    recipient: Recipient | None = None,
    skip_identical: bool = True,
    fast: bool = True,
    min_tokens: int = 256,
    max_tokens: int | None = None,
) -> Tensor:
    """The generic entry point: one patched run per element of `runs` (a list of (hook name, index) pairs).

    Returns the metric of each run [len(runs)] ([len(runs), batch] for a `per_prompt` metric), or, without a
    metric, the logits [len(runs), batch, pos, d_vocab].
    `fast=False` runs every patched run as a full forward pass with hooks (batched), the way the
    reference does; `skip_identical=False` runs patches even where they copy the recipient's own values.
    """
    if model.training:
        raise ValueError("the model is in training mode (dropout on); call model.eval() before patching")
    tokens = tokens if tokens.ndim == 2 else tokens.unsqueeze(0)
    names = sorted({name for patches in runs for name, _ in patches})
    check_hook_names(model, names)
    if recipient is not None and not torch.equal(recipient.tokens, tokens):
        raise ValueError("the recipient run was made on other tokens than the ones given")
    rec = recipient or recipient_run(model, tokens, names)
    missing = [n for n in names if n not in rec.acts]
    if missing:
        rec.acts.update(recipient_run(model, tokens, missing).acts)
    never = [n for n in names if n not in rec.acts]
    if never:
        raise HookNotFired(_never_ran(never))
    for name in names:
        have, want = donor_activation(donor, name).shape, rec.acts[name].shape
        if have != want:
            raise ShapeMismatch(f"donor activation {name} has shape {tuple(have)}, the recipient's is {tuple(want)}")
    n_layers, n = model.cfg.n_layers, rec.n_pos
    changed = _Changes(rec, donor)
    plan = []
    for i, patches in enumerate(runs):
        patches = [(name, index if isinstance(index, tuple) else (index,)) for name, index in patches]
        entry = min((_entry(model, name) for name, _ in patches), default=n_layers)
        first = changed.first_pos if skip_identical else _first_pos
        start = min((first(index, name, n) for name, index in patches), default=n)
        plan.append(_Run(patches=patches, entry=entry, start=min(start, n - 1) if fast and rec.truncate else 0, index=i))

    vocab = rec.logits.shape[-1]
    max_tokens = max_tokens or max(n * rec.batch, min(4096, (1 << 25) // max(vocab, 1)))
    results: list[Tensor | None] = [None] * len(plan)
    unpatched = None
    todo = []
    for run in plan:
        if not run.patches or (skip_identical and _is_noop(rec, donor, run)):
            if unpatched is None:
                unpatched = rec.logits.unsqueeze(0)
                unpatched = _apply_metric(metric, unpatched)[0] if metric is not None else unpatched[0]
            results[run.index] = unpatched
        else:
            todo.append(run)
    quick = [r for r in todo if fast and rec.fast and r.entry >= 0]
    slow = [r for r in todo if not (fast and rec.fast and r.entry >= 0)]
    # Only the final position is unembedded where the metric reads nothing else (and no patch is at or
    # after ln_final, whose positions would then no longer line up).
    final_only = metric is not None and getattr(metric, "final_position_only", False)
    for start, chunk in _chunks(quick, rec, min_tokens, max_tokens):
        chunk.sort(key=lambda r: r.entry)
        only = final_only and chunk[-1].entry < n_layers
        _store(results, chunk, _run_blocks(rec, chunk, donor, start, only), metric)
    per_chunk = max(1, max_tokens // (n * rec.batch))
    for k in range(0, len(slow), per_chunk):
        chunk = slow[k : k + per_chunk]
        _store(results, chunk, _run_hooked(rec, chunk, donor), metric)
    return torch.stack(results)


def _store(results: list, chunk: list[_Run], logits: Tensor, metric: MetricFn | None) -> None:
    values = _apply_metric(metric, logits) if metric is not None else logits
    for run, value in zip(chunk, values):
        results[run.index] = value


def patched_logits(
    model, tokens: Int[Tensor, "batch pos"], donor_cache: Donor, patches: Sequence[Patch], *, fast: bool = True
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of `tokens` through `model` with the activations named by `patches` taken from `donor_cache`."""
    return run_patches(model, tokens, donor_cache, [list(patches)], skip_identical=False, fast=fast)[0]


# ---------------------------------------------------------------------------------------------
# Sweeps (shapes and semantics of their transformer_lens.patching counterparts)


def layer_pos_sweep(
    model, corrupted_tokens: Tensor, clean_cache: Donor, metric: MetricFn, field: str = "resid_pre", **kw
) -> Float[Tensor, "layer pos"]:
    """Patch `field` (resid_pre, resid_mid, resid_post, attn_out, mlp_out) at each layer and position."""
    n_layers, n = model.cfg.n_layers, corrupted_tokens.shape[-1]
    runs = [[(get_act_name(field, layer), (slice(None), pos))] for layer in range(n_layers) for pos in range(n)]
    return run_patches(model, corrupted_tokens, clean_cache, runs, metric, **kw).reshape(n_layers, n)


def resid_pre_sweep(model, corrupted_tokens: Tensor, clean_cache: Donor, metric: MetricFn, **kw) -> Float[Tensor, "layer pos"]:
    """Residual stream entering each block, by position (get_act_patch_resid_pre)."""
    return layer_pos_sweep(model, corrupted_tokens, clean_cache, metric, "resid_pre", **kw)


def attn_out_sweep(model, corrupted_tokens: Tensor, clean_cache: Donor, metric: MetricFn, **kw) -> Float[Tensor, "layer pos"]:
    """Attention output of each block, by position (get_act_patch_attn_out)."""
    return layer_pos_sweep(model, corrupted_tokens, clean_cache, metric, "attn_out", **kw)


def mlp_out_sweep(model, corrupted_tokens: Tensor, clean_cache: Donor, metric: MetricFn, **kw) -> Float[Tensor, "layer pos"]:
    """MLP output of each block, by position (get_act_patch_mlp_out)."""
    return layer_pos_sweep(model, corrupted_tokens, clean_cache, metric, "mlp_out", **kw)


def head_out_sweep(model, corrupted_tokens: Tensor, clean_cache: Donor, metric: MetricFn, **kw) -> Float[Tensor, "layer head"]:
    """Each head's output (hook_z) at all positions (get_act_patch_attn_head_out_all_pos)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    runs = [[(get_act_name("z", layer), (slice(None), slice(None), head))] for layer in range(n_layers) for head in range(n_heads)]
    return run_patches(model, corrupted_tokens, clean_cache, runs, metric, **kw).reshape(n_layers, n_heads)


def head_out_by_pos_sweep(
    model, corrupted_tokens: Tensor, clean_cache: Donor, metric: MetricFn, **kw
) -> Float[Tensor, "layer pos head"]:
    """Each head's output (hook_z) at each position (get_act_patch_attn_head_out_by_pos)."""
    n_layers, n_heads, n = model.cfg.n_layers, model.cfg.n_heads, corrupted_tokens.shape[-1]
    runs = [
        [(get_act_name("z", layer), (slice(None), pos, head))]
        for layer in range(n_layers)
        for pos in range(n)
        for head in range(n_heads)
    ]
    return run_patches(model, corrupted_tokens, clean_cache, runs, metric, **kw).reshape(n_layers, n, n_heads)


def head_patches(heads: Sequence[tuple[int, int]], pos: int | None = None) -> list[Patch]:
    """hook_z patches for a set of (layer, head), at every position or at `pos`."""
    where = slice(None) if pos is None else pos
    return [(get_act_name("z", layer), (slice(None), where, head)) for layer, head in heads]


def patch_heads(
    model, tokens: Tensor, donor_cache: Donor, heads: Sequence[tuple[int, int]], metric: MetricFn, pos: int | None = None
) -> Tensor:
    """The metric with every head in `heads` patched at once (all positions, or `pos`)."""
    return run_patches(model, tokens, donor_cache, [head_patches(heads, pos)], metric, skip_identical=False)[0]
