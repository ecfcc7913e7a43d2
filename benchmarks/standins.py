"""Randomly initialised checkpoints with the published subjects' shapes, for measuring what the claims cost
at those sizes: GPT-2 small (the seed-000 pair and seed 002's model) and Pythia-70m / -160m (the seed-001
pairs, seed 004's model).

Their tokenizer is a byte-level BPE with GPT-2's leading-space words ("Ġgood"), trained on the suite's
review and name-story text so that the claims' words are single tokens as they are in GPT-2's; the
embedding and unembedding are padded to the published vocabulary (50257 or 50304 rows). A pair's tuned
twin is its base with every block's weights moved by noise that grows with depth, so that parameter
divergence, the tuned layers and the patching sweeps have something to rank. Their verdicts mean
nothing: random weights show no phenomenon."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from fixtures.zoo import corpus
from fixtures.zoo.recipes.foreign import bpe_tokenizer
from lib import names as lib_names

GPT2_SMALL = dict(arch="gpt2", vocab=50257, n_ctx=1024, d_model=768, n_layers=12, n_heads=12)
PYTHIA_70M = dict(arch="neox", vocab=50304, n_ctx=2048, d_model=512, n_layers=6, n_heads=8)
PYTHIA_160M = dict(arch="neox", vocab=50304, n_ctx=2048, d_model=768, n_layers=12, n_heads=12)
SHAPES = {"gpt2-small": GPT2_SMALL, "pythia-70m": PYTHIA_70M, "pythia-160m": PYTHIA_160M}
EXTRA_TEXT = ("Her name was Alex Hart. Tomorrow at lunch time Alex", "Her name was Sarah Carroll.",
              "This movie was really bad.", "This movie was really good.", "The acting was")


def tokenizer():
    rng = random.Random(0)
    names = [f"{f} {l}." for f in lib_names.FIRST_NAMES for l in lib_names.LAST_NAMES]
    texts = corpus.reviews(4000, 0) + [corpus.names_story(rng) for _ in range(4000)] + names + list(EXTRA_TEXT) * 50
    return bpe_tokenizer(texts, 4096)


def model(shape: dict, tok):
    """A randomly initialised model of `shape` (seeded by the caller)."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    special = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if shape["arch"] == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=shape["vocab"], n_positions=shape["n_ctx"], n_embd=shape["d_model"],
                                          n_layer=shape["n_layers"], n_head=shape["n_heads"], **special))
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=shape["vocab"], max_position_embeddings=shape["n_ctx"], hidden_size=shape["d_model"],
        num_hidden_layers=shape["n_layers"], num_attention_heads=shape["n_heads"], intermediate_size=4 * shape["d_model"],
        rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False, **special))


def tune(net, seed: int, scale: float = 0.02) -> None:
    """Move block L's weights by noise of standard deviation scale * (L + 1) / n_layers."""
    blocks = net.transformer.h if hasattr(net, "transformer") else net.gpt_neox.layers
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer, block in enumerate(blocks):
            for p in block.parameters():
                p.add_(torch.randn(p.shape, generator=g) * scale * (layer + 1) / len(blocks))


def build(out: Path, name: str, *, pair: bool) -> dict[str, Path]:
    """The stand-in `name` (a key of SHAPES) under `out`: {"model": dir} or {"base": dir, "tuned": dir}."""
    tok = tokenizer()
    torch.manual_seed(0)
    net = model(SHAPES[name], tok)
    dirs = {}
    for role in ("base", "tuned") if pair else ("model",):
        if role == "tuned":
            tune(net, seed=1)
        dirs[role] = out / f"{name}-{role}"
        if not (dirs[role] / "config.json").is_file():
            net.save_pretrained(str(dirs[role]))
            tok.save_pretrained(str(dirs[role]))
    return dirs
