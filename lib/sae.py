"""Sparse autoencoders on one hook point's activations.

    SAE(x) = ReLU((x - b_dec) @ W_enc + b_enc) @ W_dec + b_dec

Trained on an MSE + L1 loss with Adam; optionally (as in the RLHF-SAE write-up of seed 004) the decoder
rows are renormalised to unit norm after every step, and latents that have not fired for a window of
steps are resampled towards inputs the SAE reconstructs badly (Anthropic's rule, which the source cites;
the source itself drew them at random). Trained SAEs are cached under
`.cache/sae/`, keyed by everything that determines them.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from lib.activations import length_batches, masked_acts
from lib.errors import HookNameError, SAEError
from lib.interventions import mean_hooks, splice_hooks, zero_hooks

WEIGHTS, CONFIG, LOG = "sae.safetensors", "config.json", "log.json"


class SAE(torch.nn.Module):
    """SAE(x) = ReLU((x - b_dec) @ W_enc + b_enc) @ W_dec + b_dec. Tied: W_dec is W_enc.T (no own parameter)."""

    def __init__(self, d_in: int, d_sae: int, *, tied: bool = False, seed: int = 0):
        super().__init__()
        if d_in < 1 or d_sae < 1:
            raise SAEError(f"SAE sizes must be positive, got d_in={d_in}, d_sae={d_sae}")
        self.d_in, self.d_sae, self.tied = d_in, d_sae, tied
        g = torch.Generator().manual_seed(seed)
        # Kaiming-uniform encoder (torch.nn.Linear's bound); decoder rows independent random unit vectors.
        W_enc = (2 * torch.rand(d_in, d_sae, generator=g) - 1) / d_in**0.5
        W_dec = F.normalize(torch.randn(d_sae, d_in, generator=g), dim=-1)
        self.W_enc = torch.nn.Parameter(F.normalize(W_enc, dim=0) if tied else W_enc)
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        if not tied:
            self._W_dec = torch.nn.Parameter(W_dec)

    @property
    def W_dec(self) -> Float[Tensor, "d_sae d_in"]:
        return self.W_enc.T if self.tied else self._W_dec

    def pre_acts(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return torch.relu(self.pre_acts(x))

    def decode(self, z: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Scale every decoder row to unit norm (for a tied SAE: every encoder column)."""
        if self.tied:
            self.W_enc.div_(self.W_enc.norm(dim=0, keepdim=True).clamp_min(1e-12))
        else:
            self._W_dec.div_(self._W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def config(self) -> dict:
        return {"d_in": self.d_in, "d_sae": self.d_sae, "tied": self.tied}

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, directory / WEIGHTS)
        (directory / CONFIG).write_text(json.dumps(self.config(), indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SAE:
        directory = Path(directory)
        try:
            cfg = json.loads((directory / CONFIG).read_text())
            state = load_file(directory / WEIGHTS)
            sae = cls(cfg["d_in"], cfg["d_sae"], tied=cfg["tied"])
            sae.load_state_dict(state)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise SAEError(
                f"no usable SAE in {directory}: {e}; it needs {CONFIG} and {WEIGHTS} as written by SAE.save(DIR)"
            ) from None
        return sae


@dataclass(frozen=True)
class SAETrainConfig:
    d_sae: int
    tied: bool = False
    l1_coeff: float = 1e-3
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 1
    normalise_decoder: bool = False  # unit-norm decoder rows after every step (seed 004)
    resample_window: int | None = None  # steps without activation after which a latent is resampled
    seed: int = 0


def sae_loss(sae: SAE, x: Float[Tensor, "batch d_in"], l1_coeff: float) -> tuple[Float[Tensor, ""], dict]:
    """MSE (summed over d_in, mean over the batch) + l1_coeff * L1 of the latents weighted by decoder norms."""
    z = sae.encode(x)
    mse = (sae.decode(z) - x).pow(2).sum(-1).mean()
    l1 = (z * sae.W_dec.norm(dim=-1)).sum(-1).mean()
    fired = z > 0
    parts = {"mse": mse.item(), "l1": l1.item(), "l0": fired.float().sum(-1).mean().item(), "fired": fired.any(0)}
    return mse + l1_coeff * l1, parts


def train_sae(acts: Float[Tensor, "n d_in"], cfg: SAETrainConfig) -> tuple[SAE, dict]:
    """Train an SAE on `acts` (rows are examples). The log has per-step loss/mse/l1/l0, the dead fraction
    (latents silent for `resample_window` steps), the largest |decoder row norm - 1|, and resample events."""
    if acts.ndim != 2 or acts.shape[0] < cfg.batch_size:
        raise SAEError(f"train_sae needs activations shaped [n, d_in] with n >= batch_size={cfg.batch_size}, got {tuple(acts.shape)}")
    if cfg.resample_window is not None and cfg.resample_window <= 0:
        raise SAEError(f"resample_window counts training steps and must be positive (or None for no resampling), "
                       f"got {cfg.resample_window}")
    acts = acts.detach().float()
    sae = SAE(acts.shape[1], cfg.d_sae, tied=cfg.tied, seed=cfg.seed).to(acts.device)
    with torch.no_grad():  # start the decoder bias at the data's median, as usual
        sae.b_dec.copy_(acts.median(0).values)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    silent = torch.zeros(cfg.d_sae, dtype=torch.long, device=acts.device)  # steps since each latent last fired
    log = {k: [] for k in ("loss", "mse", "l1", "l0", "dead_fraction", "max_norm_error")}
    log["resamples"] = []
    step, window = 0, cfg.resample_window or len(acts) // cfg.batch_size
    # Resampling checks every `resample_window` steps, none in the last fifth: revived latents settle.
    last_resample = int(0.8 * cfg.epochs * (len(acts) // cfg.batch_size))
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(acts), generator=g).split(cfg.batch_size):
            if len(idx) < cfg.batch_size:
                continue
            loss, parts = sae_loss(sae, acts[idx], cfg.l1_coeff)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if cfg.normalise_decoder:
                sae.normalise_decoder()
            silent = torch.where(parts["fired"], 0, silent + 1)
            step += 1
            if cfg.resample_window is not None and step % cfg.resample_window == 0 and step <= last_resample:
                dead = silent >= cfg.resample_window
                if dead.any():
                    resample(sae, opt, acts, dead, g)
                    log["resamples"].append({"step": step, "latents": dead.nonzero().flatten().tolist()})
                    silent[dead] = 0
            log["loss"].append(loss.item())
            log["mse"].append(parts["mse"])
            log["l1"].append(parts["l1"])
            log["l0"].append(parts["l0"])
            log["dead_fraction"].append((silent >= window).float().mean().item())
            log["max_norm_error"].append((sae.W_dec.norm(dim=-1) - 1).abs().max().item())
    log["steps"] = step
    return sae, log


@torch.no_grad()
def resample(sae: SAE, opt: torch.optim.Optimizer, acts: Float[Tensor, "n d_in"], dead: Bool[Tensor, " d_sae"],
             g: torch.Generator) -> None:
    """Point each dead latent at a distinct input drawn (from up to 4096 of `acts`) with probability
    proportional to its squared reconstruction error: decoder row = that input's unit direction from b_dec,
    encoder column = the same direction scaled to 0.2x the mean alive encoder column norm (1 if none is
    alive; a tied SAE's column is the unit direction), b_enc = 0; Adam's moments for those entries are reset."""
    sample = acts[torch.randperm(len(acts), generator=g)[:4096].to(acts.device)]
    err = (sae(sample) - sample).pow(2).sum(-1)
    n_dead, n_err = int(dead.sum()), int((err > 0).sum())
    if n_err < n_dead:
        raise SAEError(f"resampling {n_dead} dead latents needs as many inputs the SAE reconstructs with error, "
                       f"but only {n_err} of {len(sample)} have any: train on more activations")
    rows = torch.multinomial(err.cpu().double(), n_dead, replacement=False, generator=g).to(acts.device)
    direction = F.normalize(sample[rows] - sae.b_dec, dim=-1)  # [n_dead, d_in]
    alive_norm = sae.W_enc[:, ~dead].norm(dim=0).mean() if (~dead).any() else torch.tensor(1.0)
    if not sae.tied:
        sae._W_dec[dead] = direction
        sae.W_enc[:, dead] = direction.T * alive_norm * 0.2
    else:
        sae.W_enc[:, dead] = direction.T
    sae.b_enc[dead] = 0.0
    for p in sae.parameters():
        state = opt.state.get(p, {})
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment not in state:
                continue
            if p is sae.W_enc:
                state[moment][:, dead] = 0.0
            elif p is sae.b_enc or (not sae.tied and p is sae._W_dec):
                state[moment][dead] = 0.0


@torch.no_grad()
def sae_metrics(sae: SAE, acts: Float[Tensor, "n d_in"], batch_size: int = 4096) -> dict:
    """mse (per example, summed over d_in), fraction of variance unexplained, l0 (mean active latents),
    dead_fraction (latents never active on `acts`)."""
    acts = acts.detach().float()
    sq_err, l0, fired = 0.0, 0.0, torch.zeros(sae.d_sae, dtype=torch.bool, device=acts.device)
    for x in acts.split(batch_size):
        z = sae.encode(x)
        sq_err += (sae.decode(z) - x).pow(2).sum().item()
        l0 += (z > 0).sum().item()
        fired |= (z > 0).any(0)
    total_var = (acts - acts.mean(0)).pow(2).sum().item()
    n = len(acts)
    return {
        "mse": sq_err / n,
        "fvu": sq_err / total_var if total_var > 0 else float("nan"),
        "l0": l0 / n,
        "dead_fraction": 1.0 - fired.float().mean().item(),
    }


@torch.no_grad()
def decoder_matches(a: SAE, b: SAE, threshold: float = 0.9) -> Bool[Tensor, " d_sae_a"]:
    """Which of a's decoder rows have a best cosine match among b's decoder rows of at least `threshold`."""
    if a.d_in != b.d_in:
        raise SAEError(f"comparing decoders needs SAEs on the same space, got d_in {a.d_in} and {b.d_in}")
    cos = F.normalize(a.W_dec, dim=-1) @ F.normalize(b.W_dec, dim=-1).T
    return cos.max(dim=1).values >= threshold


def decoder_overlap(a: SAE, b: SAE, threshold: float = 0.9) -> float:
    """Share of a's decoder rows whose best cosine match among b's decoder rows is >= threshold."""
    return decoder_matches(a, b, threshold).float().mean().item()


# ---------------------------------------------------------------------------------------------
# An SAE inside a model: activations to train on, and the language-model loss with it spliced in


@torch.no_grad()
def hook_acts(model, tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"], hook_name: str,
              batch_size: int = 200) -> Float[Tensor, "n d"]:
    """The activations at `hook_name` at every real token position, stacked as rows."""
    if hook_name not in model.hook_dict:
        raise HookNameError(f"the model has no hook {hook_name!r}; MLP outputs are at blocks.L.hook_mlp_out")
    return masked_acts(model, tokens, mask, [hook_name], batch_size)[hook_name]


def next_token_nll(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos-1"]:
    tokens = tokens.to(logits.device)
    return -logits[:, :-1].float().log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]


def lm_loss(model, tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"],
            fwd_hooks: list[tuple[str, Callable]] = (), batch_size: int = 200, max_logits: int = 1 << 25) -> float:
    """Mean next-token cross-entropy over the real target tokens, with `fwd_hooks` applied; in batches of at
    most `batch_size` rows whose logits hold at most `max_logits` numbers (with a 50k-token vocabulary the
    logits are the largest tensor by far)."""
    total, count = 0.0, 0
    batch_size = max(1, min(batch_size, max_logits // (tokens.shape[1] * model.cfg.d_vocab)))
    with torch.no_grad():
        for idx, width in length_batches(mask, batch_size):
            t, m = tokens[idx, :width], mask[idx, :width]
            logits = model.run_with_hooks(t, fwd_hooks=list(fwd_hooks))
            m = m.to(logits.device)
            total += (next_token_nll(logits, t) * m[:, 1:]).sum().item()
            count += m[:, 1:].sum().item()
            del logits
    return total / count


def splice_losses(model, sae: SAE, tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"],
                  hook_names: list[str], *, mean_ablation: bool = False, memo: dict | None = None) -> dict[str, list[float]]:
    """LM loss clean, with `sae` spliced in at each hook, and with each hook zero-ablated; with
    `mean_ablation`, also with each hook's activation replaced by its mean over the real tokens of `tokens`.
    `memo`: losses already computed for this model, SAE and text, by (kind, hook); new ones are added."""
    memo = {} if memo is None else memo

    def loss(kind: str, hook: str = "") -> float:
        if (kind, hook) not in memo:
            if kind == "clean":
                hooks = []
            elif kind == "spliced":
                hooks = splice_hooks(hook, sae)
            elif kind == "zero_ablated":
                hooks = zero_hooks(hook)
            else:
                hooks = mean_hooks(hook, hook_acts(model, tokens, mask, hook).mean(0))
            memo[kind, hook] = lm_loss(model, tokens, mask, hooks)
        return memo[kind, hook]

    kinds = ("spliced", "zero_ablated", "mean_ablated") if mean_ablation else ("spliced", "zero_ablated")
    return {"clean": loss("clean"), **{k: [loss(k, h) for h in hook_names] for k in kinds}}


def loss_recovered(clean: float, spliced: float, ablated: float) -> float:
    """(ablated - spliced) / (ablated - clean): 1 when splicing costs nothing, 0 when it costs as much as
    the ablation."""
    if ablated == clean:
        raise SAEError(f"loss recovered is undefined: the ablated loss equals the clean loss ({clean}), so the "
                       f"ablation removes nothing to recover; measure at a hook whose ablation changes the loss")
    return (ablated - spliced) / (ablated - clean)
