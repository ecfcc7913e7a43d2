"""Sampling: paired by seed, through hooks and prompt lengths, and the same completions from the zoo's
build-time sampler (a transformers model) and the claims' (the same model loaded for analysis)."""
from __future__ import annotations

import pytest
import torch
from transformer_lens.utilities import get_act_name

from fixtures import zoo
from fixtures.zoo import training as T
from lib import sampling
from lib.loading import load_model
from lib.sampling import next_token_logits, sample_completions, sample_tokens


@pytest.fixture(scope="module")
def model():
    return load_model("zoo:tiny-gpt2")


def test_sampling_is_paired_by_seed(model):
    a = sample_completions(model, ["Her name was"], 6, seed=3, max_new_tokens=4)
    b = sample_completions(model, ["Her name was"], 6, seed=3, max_new_tokens=4)
    c = sample_completions(model, ["Her name was"], 6, seed=4, max_new_tokens=4)
    assert a == b and a != c


def test_sampling_stays_paired_through_hooks_and_prompt_lengths(model):
    prompts = ["Her name was", "Once upon a time there", "Yes"]
    identity = [(get_act_name("mlp_out", 0), lambda act, hook=None: act)]
    a = sample_completions(model, prompts, 7, seed=5, max_new_tokens=3, batch_size=2)
    b = sample_completions(model, prompts, 7, seed=5, max_new_tokens=3, batch_size=2, fwd_hooks=identity)
    assert a == b
    with pytest.raises(ValueError, match="n >= 1"):
        sample_completions(model, prompts, 0, seed=5)


@pytest.mark.parametrize("ref", ["zoo:tiny-gpt2", "zoo:tiny-neox"])
@pytest.mark.parametrize("broken", [(), ("_kv_cached",), ("_kv_cached", "_last_position")])
def test_next_token_logits_are_the_forward_passes(ref, broken, monkeypatch):
    """Step by step (a prompt, then one token more at a time), with a hook: the logits of the model's own
    forward pass, whichever way serves them; a way that gives other numbers (broken here on purpose) is
    dropped after its check."""
    model = load_model(ref)
    tokens = model.to_tokens(["Her name was Alex Hart . Tomorrow at lunch", "Her name was Sam Hart . Later that day"])
    halve = [(get_act_name("mlp_out", 0), lambda act, hook=None: act * 0.5)]
    for name in broken:
        monkeypatch.setattr(sampling, name, lambda model, hooks: lambda t: torch.zeros(t.shape[0], model.cfg.d_vocab))
    with torch.no_grad():
        full = model.run_with_hooks(tokens, fwd_hooks=halve)
        next_logits = next_token_logits(model, halve)
        for end in range(4, tokens.shape[1] + 1):
            torch.testing.assert_close(next_logits(tokens[:, :end]), full[:, end - 1], atol=1e-4, rtol=0)


def test_sampling_follows_the_distribution_and_stops_at_eos():
    # next-token distribution fixed at p = (0.5, 0.3, 0.2, 0) over tokens 0..3; token 2 is eos
    logp = torch.tensor([0.5, 0.3, 0.2, 0.0]).log()
    rows = sample_tokens(lambda t: logp.expand(len(t), -1), [[3]] * 4000, seed=0, max_new_tokens=1)
    share = torch.bincount(torch.tensor(rows)[:, 0], minlength=4).float() / 4000
    torch.testing.assert_close(share, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.03, rtol=0)
    cut = sample_tokens(lambda t: logp.expand(len(t), -1), [[3]] * 50, seed=0, max_new_tokens=6, eos=2)
    assert all(2 not in r for r in cut) and any(len(r) < 6 for r in cut)


def test_build_time_and_analysis_samplers_agree():
    """The zoo recorded its models' samples with the transformers model; the claims sample the same
    model loaded for analysis. Both go through one sampler, so the same seed gives the same text."""
    hf, tokenizer = T.load(zoo.path("review-lm"))
    tl = load_model("zoo:review-lm")
    prompts = ["This movie was really", "The acting was"] * 4
    built = T.complete(hf, tokenizer, prompts, seed=7, max_new_tokens=8)
    ours = sample_completions(tl, prompts, len(prompts), seed=7, max_new_tokens=8)
    assert built == [f"{p} {c}".rstrip() for p, c in zip(prompts, ours)]
