"""Parameter divergence against the checkpoints' own files: every saved tensor counted once, although the
loaded model also exposes views of some (GPT-2's joint qkv weight as separate q, k and v)."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from lib.divergence import block_divergence, block_of
from lib.loading import load_model


def _l2_from_files(base_ref: str, tuned_ref: str, n_layers: int) -> torch.Tensor:
    a, b = (load_file(str(load_model(r).checkpoint.weight_files[0])) for r in (base_ref, tuned_ref))
    sq = torch.zeros(n_layers, dtype=torch.float64)
    for name, w in a.items():
        layer = block_of(name)
        if layer is not None:
            sq[layer] += (b[name].double() - w.double()).pow(2).sum()
    return sq.sqrt()


def test_block_divergence_matches_the_saved_tensors():
    base, tuned = load_model("zoo:review-lm"), load_model("zoo:review-lm-negative")
    div = block_divergence(base, tuned)
    expected = _l2_from_files("zoo:review-lm", "zoo:review-lm-negative", base.cfg.n_layers)
    assert expected[-1] > 1.0 and expected[0] == 0.0  # the last blocks were tuned, the first frozen
    torch.testing.assert_close(div["l2"].double(), expected, rtol=1e-5, atol=1e-6)


def test_divergence_of_a_model_with_itself_is_zero():
    model = load_model("zoo:tiny-gpt2")
    div = block_divergence(model, model)
    assert not div["l2"].any() and not div["max_abs"].any()
