"""TransformerLens' own checkpoint format, read as the equivalent Hugging Face GPT-2.

The format of the models TransformerLens trained itself (NeelNanda/GELU_2L512W_C4_Code, "gelu-2l", and
its siblings): a `*.pth` HookedTransformer state dict (`embed.W_E`, `blocks.0.attn.W_Q` as
[head, d_model, d_head], ...) beside a config.json of HookedTransformerConfig fields (`d_model`,
`n_layers`, `act_fn`, ...; no `model_type`). A model with LayerNorm, learned positional embeddings and
n_heads * d_head = d_model is a GPT-2 with untied unembedding: the weights are rearranged, not changed,
so its logits are GPT-2's. The state dict is read with torch's weights-only loader (it cannot run code).
"""
from __future__ import annotations

from pathlib import Path

import einops
import torch
from torch import Tensor

from lib.errors import CheckpointError

# HookedTransformerConfig.act_fn -> GPT2Config.activation_function
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_fast": "gelu_fast", "relu": "relu", "silu": "silu"}
REQUIRED = ("d_model", "n_layers", "n_heads", "d_head", "d_vocab", "n_ctx", "act_fn")
BUFFERS = ("attn.mask", "attn.IGNORE")  # HookedTransformer's causal mask, not weights


def is_tl_config(config: dict) -> bool:
    """Whether a config.json is a HookedTransformerConfig rather than a Hugging Face config."""
    return "model_type" not in config and all(k in config for k in ("d_model", "n_layers", "d_head"))


def weights_file(path: Path) -> Path:
    """The `.pth` state dict of a TransformerLens checkpoint directory (`model_final.pth` where there are several)."""
    files = sorted(path.glob("*.pth"))
    if len(files) > 1:
        final = [f for f in files if f.name.endswith("final.pth")]
        if len(final) != 1:
            raise CheckpointError(f"{path} holds {len(files)} .pth state dicts ({', '.join(f.name for f in files[:4])}); "
                                  f"keep the one to load (or name it model_final.pth)")
        files = final
    if not files:
        raise CheckpointError(f"{path} has a TransformerLens config.json but no .pth state dict beside it")
    return files[0]


def normalization(cfg: dict) -> str:
    return cfg.get("normalization_type", cfg.get("normalization", "LN"))


def gpt2_config(cfg: dict, bos_token_id: int | None = None, eos_token_id: int | None = None):
    """The GPT2Config of the same architecture; CheckpointError for what GPT-2 cannot express."""
    from transformers import GPT2Config

    missing = [k for k in REQUIRED if k not in cfg]
    norm = normalization(cfg)
    problems = [f"config.json lacks {', '.join(missing)}"] if missing else []
    if not missing:
        if cfg["n_heads"] * cfg["d_head"] != cfg["d_model"]:
            problems.append(f"n_heads * d_head = {cfg['n_heads'] * cfg['d_head']} is not d_model = {cfg['d_model']}")
        if cfg["act_fn"] not in ACTIVATIONS:
            problems.append(f"act_fn {cfg['act_fn']!r} is not one of {', '.join(ACTIVATIONS)}")
    if norm not in ("LN", "LNPre"):
        problems.append(f"normalization {norm!r} is not LayerNorm")
    if cfg.get("shortformer_pos") or cfg.get("positional_embedding_type", "standard") != "standard":
        problems.append("positional embeddings are not the standard learned ones")
    for flag in ("final_rms", "parallel_attn_mlp", "gated_mlp", "scale_attn_by_inverse_layer_idx"):
        if cfg.get(flag):
            problems.append(f"{flag} is set")
    if cfg.get("use_attn_scale", True) is False or ("attn_scale" in cfg and cfg["attn_scale"] != cfg.get("d_head", 0) ** 0.5):
        problems.append("attention is not scaled by sqrt(d_head)")
    if problems:
        raise CheckpointError(f"this TransformerLens checkpoint has no GPT-2 equivalent: {'; '.join(problems)}")
    return GPT2Config(
        vocab_size=cfg["d_vocab"], n_positions=cfg["n_ctx"], n_embd=cfg["d_model"], n_layer=cfg["n_layers"],
        n_head=cfg["n_heads"], n_inner=cfg.get("d_mlp") or 4 * cfg["d_model"],
        activation_function=ACTIVATIONS[cfg["act_fn"]], layer_norm_epsilon=cfg.get("eps", 1e-5),
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
        architectures=["GPT2LMHeadModel"], bos_token_id=bos_token_id, eos_token_id=eos_token_id,
    )


def gpt2_state_dict(sd: dict[str, Tensor], cfg: dict) -> dict[str, Tensor]:
    """A HookedTransformer state dict rearranged into GPT2LMHeadModel's. An attention-only model gets MLPs
    whose weights are zero (they add exactly nothing); LNPre (LayerNorm without weights) gets weights of
    one and biases of zero. Every tensor the architecture reads must be there, and nothing else."""
    d_model, d_mlp = cfg["d_model"], cfg.get("d_mlp") or 4 * cfg["d_model"]
    sd = {k: v for k, v in sd.items() if not k.endswith(BUFFERS)}
    used: set[str] = set()
    ln_pre = normalization(cfg) == "LNPre"

    def take(key: str, default: Tensor | None = None) -> Tensor:
        if key not in sd:
            if default is None:
                raise CheckpointError(f"the TransformerLens state dict has no {key!r}")
            return default
        used.add(key)
        return sd[key].detach().to(torch.float32)

    def layer_norm(name: str) -> tuple[Tensor, Tensor]:
        """LayerNorm weight and bias: LNPre has none (a LayerNorm weight in its state dict is refused as unused)."""
        return (torch.ones(d_model), torch.zeros(d_model)) if ln_pre else (take(f"{name}.w"), take(f"{name}.b"))

    out = {"transformer.wte.weight": take("embed.W_E"), "transformer.wpe.weight": take("pos_embed.W_pos")}
    for layer in range(cfg["n_layers"]):
        tl, hf = f"blocks.{layer}", f"transformer.h.{layer}"
        attn_only = cfg.get("attn_only", False)
        out[f"{hf}.ln_1.weight"], out[f"{hf}.ln_1.bias"] = layer_norm(f"{tl}.ln1")
        out[f"{hf}.ln_2.weight"], out[f"{hf}.ln_2.bias"] = (  # an attention-only block has no MLP to normalise for
            (torch.ones(d_model), torch.zeros(d_model)) if attn_only else layer_norm(f"{tl}.ln2"))
        w_qkv = [einops.rearrange(take(f"{tl}.attn.W_{x}"), "head d_model d_head -> d_model (head d_head)") for x in "QKV"]
        b_qkv = [take(f"{tl}.attn.b_{x}").flatten() for x in "QKV"]
        out[f"{hf}.attn.c_attn.weight"] = torch.cat(w_qkv, dim=1)
        out[f"{hf}.attn.c_attn.bias"] = torch.cat(b_qkv)
        out[f"{hf}.attn.c_proj.weight"] = einops.rearrange(take(f"{tl}.attn.W_O"), "head d_head d_model -> (head d_head) d_model")
        out[f"{hf}.attn.c_proj.bias"] = take(f"{tl}.attn.b_O")
        out[f"{hf}.mlp.c_fc.weight"] = torch.zeros(d_model, d_mlp) if attn_only else take(f"{tl}.mlp.W_in")
        out[f"{hf}.mlp.c_fc.bias"] = torch.zeros(d_mlp) if attn_only else take(f"{tl}.mlp.b_in")
        out[f"{hf}.mlp.c_proj.weight"] = torch.zeros(d_mlp, d_model) if attn_only else take(f"{tl}.mlp.W_out")
        out[f"{hf}.mlp.c_proj.bias"] = torch.zeros(d_model) if attn_only else take(f"{tl}.mlp.b_out")
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = layer_norm("ln_final")
    out["lm_head.weight"] = take("unembed.W_U").T.contiguous()
    b_u = take("unembed.b_U", torch.zeros(cfg["d_vocab"]))
    if b_u.abs().max() > 0:
        raise CheckpointError("the TransformerLens state dict has a non-zero unembedding bias unembed.b_U, which GPT-2 "
                              "has no place for; this checkpoint cannot be read as GPT-2")
    unused = sorted(set(sd) - used)
    if unused:
        raise CheckpointError(f"the TransformerLens state dict holds {', '.join(unused[:4])}"
                              f"{f' and {len(unused) - 4} more' if len(unused) > 4 else ''} that this "
                              f"architecture has no place for")
    return out


def load_gpt2(path: Path, cfg: dict, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              bos_token_id: int | None = None, eos_token_id: int | None = None):
    """The GPT2LMHeadModel equivalent to the TransformerLens checkpoint in `path` (config `cfg`); the
    special-token ids are its tokenizer's."""
    from transformers import GPT2LMHeadModel

    file = weights_file(path)
    try:
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{file} could not be read as a state dict of tensors: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{file} is not a state dict (a dict of tensors)")
    hf_cfg = gpt2_config(cfg, bos_token_id, eos_token_id)
    weights = gpt2_state_dict(sd, cfg)
    with torch.device("meta"):
        model = GPT2LMHeadModel(hf_cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [f"{k} {tuple(weights[k].shape)} for {expected[k]}" for k in expected if k in weights
             and tuple(weights[k].shape) != expected[k]]
    if wrong:
        raise CheckpointError(f"{file}: tensors of the wrong shape for its config.json: {'; '.join(wrong[:3])}")
    model.load_state_dict(weights, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()
