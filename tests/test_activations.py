"""Token batches from text: one builder for the SAE claims (BOS in the mask) and the neuron claims (BOS out)."""
from __future__ import annotations

import pytest
import torch

from lib.activations import capture, masked_acts, neuron_acts, text_tokens
from lib.errors import HookNameError
from lib.loading import load_model


@pytest.fixture(scope="module")
def tiny():
    return load_model("zoo:tiny-gpt2")


def test_bos_is_the_only_difference_between_the_two_masks(tiny):
    """The SAE and sparse-probing modules once built these with two functions that disagreed about BOS;
    now the caller says which it wants, and nothing else differs."""
    texts = ["This movie was really good .", "the plot", "Her name was Alex Hart ."]
    tokens, without = text_tokens(tiny, texts)
    same, with_bos = text_tokens(tiny, texts, bos_in_mask=True)
    assert torch.equal(tokens, same) and (tokens[:, 0] == tiny.tokenizer.bos_token_id).all()
    assert with_bos[:, 0].all() and not without[:, 0].any()
    assert torch.equal(with_bos[:, 1:], without[:, 1:])
    lengths = [len(tiny.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert without.sum(1).tolist() == [n + 1 for n in lengths]  # the text and EOS


def test_rows_are_cut_to_the_context(tiny):
    tokens, mask = text_tokens(tiny, ["the plot " * 200], n_ctx=16)
    assert tokens.shape == (1, 16) and mask.sum() == 15


def test_neuron_acts_read_mlp_post(tiny):
    tokens, _ = text_tokens(tiny, ["the plot was good ."])
    acts = neuron_acts(tiny, tokens, [1])
    _, cache = tiny.run_with_cache(tokens, names_filter="blocks.1.mlp.hook_post")
    torch.testing.assert_close(acts[:, :, 0], cache["blocks.1.mlp.hook_post"].float())


def test_capture_is_run_with_cache_stopped_after_the_last_hook(tiny):
    """The same activations as run_with_cache; nothing after the last hook asked for runs (no later block,
    no unembedding), and no hook is left on the model."""
    tokens, mask = text_tokens(tiny, ["This movie was really good .", "the plot"], bos_in_mask=True)
    names = ["blocks.1.hook_mlp_out", "blocks.0.hook_resid_pre"]
    with torch.no_grad():
        _, cache = tiny.run_with_cache(tokens, names_filter=lambda n: n in names)
    later = []
    with tiny.hooks(fwd_hooks=[("blocks.2.hook_resid_pre", lambda act, hook=None: later.append(1))]):
        got = capture(tiny, tokens, names)
    assert not later
    for n in names:
        assert torch.equal(got[n], cache[n])
    rows = masked_acts(tiny, tokens, mask, names, batch_size=1)  # each row without the padding after it
    for n in names:
        torch.testing.assert_close(rows[n], cache[n][mask], atol=1e-5, rtol=0)
    assert all(not hp.fwd_hooks for hp in tiny.hook_dict.values())
    with pytest.raises(HookNameError, match="no hook"):
        capture(tiny, tokens, ["blocks.9.hook_mlp_out"])
