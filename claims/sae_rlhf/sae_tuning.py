"""Fine-tuning through an SAE's latents only (the experiment seed 004 proposes): with the SAE spliced into
the model, learn a per-latent scale c and bias d applied just before the ReLU,

    z = ReLU(c * ((x - b_dec) @ W_enc + b_enc) + d),

and nothing else: the model and the SAE stay frozen. Trained by DPO on (chosen, rejected) completion
pairs, against the spliced model with c = 1, d = 0 as the reference.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from fixtures.cache import array_sha256, as_json, cache_dir, digest, read_or_build, verified, write_entry
from lib.interventions import splice_hooks
from lib.sae import LOG, SAE, SAEError, next_token_nll

WEIGHTS = "latent_tuning.safetensors"


class LatentTuning(torch.nn.Module):
    """A frozen SAE with a trainable per-latent scale c and bias d before its ReLU (c = 1, d = 0: the SAE)."""

    def __init__(self, sae: SAE):
        super().__init__()
        self.sae = sae
        self.c = torch.nn.Parameter(torch.ones(sae.d_sae))
        self.d = torch.nn.Parameter(torch.zeros(sae.d_sae))

    @property
    def d_in(self) -> int:
        return self.sae.d_in

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return torch.relu(self.c * self.sae.pre_acts(x) + self.d)

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        return self.sae.decode(self.encode(x))


def tuning_hooks(hook_name: str, tuning: LatentTuning) -> list[tuple[str, Callable]]:
    """fwd_hooks that replace the activation at hook_name by the tuned SAE's reconstruction (gradients flow)."""
    return splice_hooks(hook_name, tuning)


@dataclass
class PairTokens:
    """Prompt + completion rows for each side of a preference pair; `completion` masks the target tokens
    (the next-token targets, aligned with tokens[:, 1:]) that belong to the completion."""

    chosen: Int[Tensor, "pair pos"]
    chosen_completion: Bool[Tensor, "pair pos_1"]
    rejected: Int[Tensor, "pair pos"]
    rejected_completion: Bool[Tensor, "pair pos_1"]

    def __len__(self) -> int:
        return len(self.chosen)

    def select(self, idx: Int[Tensor, " k"]) -> PairTokens:
        return PairTokens(*(t[idx] for t in dataclasses.astuple(self)))


def pair_tokens(model, pairs: Sequence[dict[str, str]]) -> PairTokens:
    """`<bos> prompt completion <eos>` for the chosen and the rejected completion of each pair."""
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]
    sides = []
    for side in ("chosen", "rejected"):
        rows = [([bos, *ids(p["prompt"])], [*ids(p[side]), tok.eos_token_id]) for p in pairs]
        width = max(len(a) + len(b) for a, b in rows)
        tokens = torch.full((len(rows), width), pad, dtype=torch.long)
        completion = torch.zeros((len(rows), width - 1), dtype=torch.bool)
        for i, (prompt, comp) in enumerate(rows):
            tokens[i, : len(prompt) + len(comp)] = torch.tensor(prompt + comp)
            completion[i, len(prompt) - 1 : len(prompt) + len(comp) - 1] = True
        sides += [tokens, completion]
    return PairTokens(*sides)


def completion_logprobs(model, tokens: Int[Tensor, "pair pos"], completion: Bool[Tensor, "pair pos_1"],
                        fwd_hooks, max_logits: int = 1 << 25) -> Float[Tensor, " pair"]:
    """Sum of the log-probabilities of each row's completion tokens, in batches of rows whose logits hold at
    most `max_logits` numbers (1024 pairs with a 50k-token vocabulary would hold gigabytes)."""
    rows = max(1, max_logits // (tokens.shape[1] * model.cfg.d_vocab))
    out = []
    for idx in torch.arange(len(tokens)).split(rows):
        logits = model.run_with_hooks(tokens[idx], fwd_hooks=list(fwd_hooks))
        out.append(-(next_token_nll(logits, tokens[idx]) * completion[idx].to(logits.device)).sum(-1))
    return torch.cat(out)


def pair_logprobs(model, pairs: PairTokens, fwd_hooks) -> tuple[Float[Tensor, " pair"], Float[Tensor, " pair"]]:
    return (completion_logprobs(model, pairs.chosen, pairs.chosen_completion, fwd_hooks),
            completion_logprobs(model, pairs.rejected, pairs.rejected_completion, fwd_hooks))


@torch.no_grad()
def preferred(model, pairs: PairTokens, fwd_hooks, batch_size: int = 128) -> Bool[Tensor, " pair"]:
    """Per pair: does the model give the chosen completion a higher log-probability than the rejected one?"""
    out = []
    for idx in torch.arange(len(pairs)).split(batch_size):
        chosen, rejected = pair_logprobs(model, pairs.select(idx), fwd_hooks)
        out.append(chosen > rejected)
    return torch.cat(out)


@dataclass(frozen=True)
class TuningConfig:
    steps: int = 150
    batch_size: int = 32
    lr: float = 1e-2
    beta: float = 0.1  # DPO's inverse temperature
    optim: str = "adam"  # or "sgd": each latent then moves in proportion to its summed gradient
    seed: int = 0


def dpo_loss(chosen: Float[Tensor, " pair"], rejected: Float[Tensor, " pair"], ref_chosen: Float[Tensor, " pair"],
             ref_rejected: Float[Tensor, " pair"], beta: float) -> Float[Tensor, ""]:
    return -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean()


def tune_latents(model, sae: SAE, hook_name: str, pairs: PairTokens, cfg: TuningConfig) -> tuple[LatentTuning, dict]:
    """Learn c and d by DPO on `pairs`; gradients are taken for c and d alone. The log's `changed` lists every
    parameter of the model ('model.NAME') and of the tuned SAE ('tuning.c', 'tuning.d', 'tuning.sae.NAME')
    whose bytes differ after tuning from before it."""
    frozen_before = parameter_digest(model, sae)
    tuning = LatentTuning(sae)
    digests_before = parameter_digests(model=model, tuning=tuning)
    with torch.no_grad():
        ref_chosen, ref_rejected = pair_logprobs(model, pairs, tuning_hooks(hook_name, tuning))
    params = [tuning.c, tuning.d]
    if cfg.optim not in ("adam", "sgd"):
        raise SAEError(f"TuningConfig.optim must be 'adam' or 'sgd', got {cfg.optim!r}")
    opt = (torch.optim.Adam if cfg.optim == "adam" else torch.optim.SGD)(params, lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    log = {"loss": [], "accuracy": []}
    for _ in range(cfg.steps):
        idx = torch.randperm(len(pairs), generator=g)[: cfg.batch_size]
        chosen, rejected = pair_logprobs(model, pairs.select(idx), tuning_hooks(hook_name, tuning))
        loss = dpo_loss(chosen, rejected, ref_chosen[idx], ref_rejected[idx], cfg.beta)
        grads = torch.autograd.grad(loss, params)
        for p, grad in zip(params, grads):
            p.grad = grad
        opt.step()
        log["loss"].append(loss.item())
        log["accuracy"].append((chosen > rejected).float().mean().item())
    log["trainable"] = {name: p.numel() for name, p in tuning.named_parameters() if any(p is q for q in params)}
    log["changed"] = changed_parameters(digests_before, parameter_digests(model=model, tuning=tuning))
    log["frozen_digest_before"], log["frozen_digest_after"] = frozen_before, parameter_digest(model, sae)
    return tuning, log


def cached_tuning(key: dict, model, sae: SAE, hook_name: str, pairs: PairTokens, cfg: TuningConfig,
                  *, root: str | os.PathLike | None = None) -> tuple[LatentTuning, dict]:
    """`tune_latents`, cached under `<root>/tuning-<hash>/`. The hash covers `key` (it must name the model's
    weights), the SAE's weights, the hook, the config and the sha256 of the pairs' token tensors. An entry
    whose files do not match its manifest, or whose recorded key, hashes and config are not the request's,
    is rebuilt."""
    sae_hash = array_sha256(*(v for _, v in sorted(sae.state_dict().items())))
    request = {"key": key, "sae": sae_hash, "hook": hook_name, "pairs": array_sha256(*dataclasses.astuple(pairs))}
    out = (Path(root) if root is not None else cache_dir() / "sae") / (
        "tuning-" + digest(request, dataclasses.asdict(cfg), modules=("lib.sae", __name__)))

    def read() -> tuple[LatentTuning, dict] | None:
        if not verified(out):
            return None
        try:
            log = json.loads((out / LOG).read_text())
            if log.get("request") != as_json(request) or log.get("config") != as_json(dataclasses.asdict(cfg)):
                return None
            tuning = LatentTuning(sae)
            state = load_file(out / WEIGHTS)
            with torch.no_grad():
                tuning.c.copy_(state["c"])
                tuning.d.copy_(state["d"])
            return tuning, log
        except (OSError, ValueError, KeyError, RuntimeError):
            return None

    def build() -> tuple[LatentTuning, dict]:
        tuning, log = tune_latents(model, sae, hook_name, pairs, cfg)

        def write(tmp: Path) -> None:
            save_file({"c": tuning.c.detach().cpu().clone(), "d": tuning.d.detach().cpu().clone()}, tmp / WEIGHTS)
            (tmp / LOG).write_text(json.dumps({"request": request, "config": dataclasses.asdict(cfg), **log}, default=str))

        write_entry(out, write)
        return tuning, log

    return read_or_build(out, read, build)


@torch.no_grad()
def moved_latents(tuning: LatentTuning, acts: Float[Tensor, "n d_in"], k: int = 8) -> list[dict]:
    """The k latents whose activations the tuning changed most (mean |z_tuned - z| over `acts`), with c, d
    and their mean activation before and after."""
    pre = tuning.sae.pre_acts(acts)
    before, after = torch.relu(pre), tuning.encode(acts)
    change = (after - before).abs().mean(0)
    top = change.argsort(descending=True)[:k]
    return [{"latent": int(i), "c": tuning.c[i].item(), "d": tuning.d[i].item(), "mean_change": change[i].item(),
             "mean_before": before[:, i].mean().item(), "mean_after": after[:, i].mean().item()} for i in top]


@torch.no_grad()
def top_activating_tokens(model, sae: SAE, tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"],
                          acts: Float[Tensor, "n d_in"], latent: int, k: int = 5, context: int = 2) -> list[str]:
    """The k contexts where `latent` fires hardest, as 'previous words [token]', distinct by token.
    `acts` are the hook's activations at the real positions of `tokens` (as hook_acts returns them)."""
    z = sae.encode(acts)[:, latent]
    where = mask.nonzero()  # row-major, the order hook_acts stacks them in
    out, seen = [], set()
    for j in z.argsort(descending=True).tolist():
        if z[j] <= 0 or len(out) == k:
            break
        b, p = where[j].tolist()
        token = model.tokenizer.decode([tokens[b, p].item()]).strip()
        if token in seen:
            continue
        seen.add(token)
        prev = model.tokenizer.decode(tokens[b, max(0, p - context) : p].tolist()).strip()
        out.append(f"{prev} [{token}]")
    return out


def parameter_digests(**modules: torch.nn.Module) -> dict[str, str]:
    """sha256 of each parameter and buffer's bytes, named 'KEYWORD.NAME' after the keyword its module came in by."""
    out = {}
    for prefix, m in modules.items():
        for name, t in {**dict(m.named_parameters()), **dict(m.named_buffers())}.items():
            data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            out[f"{prefix}.{name}"] = hashlib.sha256(data).hexdigest()
    return out


def changed_parameters(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Names whose digest differs between `before` and `after` (or that appear in only one)."""
    return sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))


def parameter_digest(*modules: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer of `modules`, in name order: equal digests mean bit-identical."""
    h = hashlib.sha256()
    for m in modules:
        for name, t in sorted({**dict(m.named_parameters()), **dict(m.named_buffers())}.items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
