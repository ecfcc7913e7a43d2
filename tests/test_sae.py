"""Sparse autoencoders: the forward pass by hand, tying, the decoder-norm invariant, resampling of dead
latents, the cache, decoder overlap and splicing into a model."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures import cache as C
from fixtures.cache import cached_sae
from lib.activations import text_tokens
from lib.interventions import mean_hooks, splice_hooks, zero_hooks
from lib.loading import load_model
from lib.sae import (
    SAE,
    SAEError,
    SAETrainConfig,
    decoder_overlap,
    resample,
    sae_metrics,
    train_sae,
)


def _set(sae: SAE, W_enc, b_enc, b_dec, W_dec=None) -> SAE:
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor(W_enc))
        sae.b_enc.copy_(torch.tensor(b_enc))
        sae.b_dec.copy_(torch.tensor(b_dec))
        if W_dec is not None:
            sae._W_dec.copy_(torch.tensor(W_dec))
    return sae


def _acts(n: int = 512, d: int = 8, seed: int = 0) -> torch.Tensor:
    """Sparse mixtures of a few ground-truth directions, like activations an SAE should decompose."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(2 * d, d, generator=g), dim=-1)
    coeffs = torch.rand(n, 2 * d, generator=g) * (torch.rand(n, 2 * d, generator=g) < 0.15)
    return coeffs @ directions + 0.01 * torch.randn(n, d, generator=g)


def test_forward_by_hand():
    # x = [1, 2], b_dec = [1, 0] -> x - b_dec = [0, 2]; pre = [0*1 + 2*0, 0*(-1) + 2*1] + [0.5, -3] = [0.5, -1]
    # z = ReLU(pre) = [0.5, 0]; x_hat = 0.5 * [2, 4] + [1, 0] = [2, 2]
    sae = _set(SAE(2, 2), [[1.0, -1.0], [0.0, 1.0]], [0.5, -3.0], [1.0, 0.0], [[2.0, 4.0], [7.0, 7.0]])
    x = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(sae.encode(x), torch.tensor([[0.5, 0.0]]))
    torch.testing.assert_close(sae(x), torch.tensor([[2.0, 2.0]]))
    torch.testing.assert_close(sae.decode(torch.tensor([0.0, 1.0])), torch.tensor([8.0, 7.0]))


def test_tied_decoder_is_the_encoder_transpose():
    sae = SAE(5, 12, tied=True, seed=3)
    assert "_W_dec" not in dict(sae.named_parameters())
    torch.testing.assert_close(sae.W_dec, sae.W_enc.T)
    with torch.no_grad():
        sae.W_enc.mul_(2.0)
    torch.testing.assert_close(sae.W_dec, sae.W_enc.T)
    sae, _ = train_sae(_acts(d=5), SAETrainConfig(d_sae=12, tied=True, epochs=1))
    torch.testing.assert_close(sae.W_dec, sae.W_enc.T)


@settings(max_examples=10, deadline=None)
@given(d_in=st.integers(2, 12), expansion=st.integers(1, 4), tied=st.booleans(), seed=st.integers(0, 2**16),
       scale=st.floats(0.1, 50.0))
def test_decoder_rows_keep_unit_norm_after_every_step(d_in, expansion, tied, seed, scale):
    acts = _acts(n=96, d=d_in, seed=seed) * scale
    cfg = SAETrainConfig(d_sae=d_in * expansion, tied=tied, lr=1e-2, batch_size=16, epochs=2,
                         normalise_decoder=True, resample_window=3, seed=seed)
    sae, log = train_sae(acts, cfg)
    assert len(log["max_norm_error"]) == log["steps"] == 12
    assert max(log["max_norm_error"]) < 1e-5
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(cfg.d_sae))


def test_without_normalisation_rows_drift():
    _, log = train_sae(_acts() * 10, SAETrainConfig(d_sae=32, lr=1e-2, epochs=2))
    assert max(log["max_norm_error"]) > 1e-2


def test_resampling_revives_dead_latents(monkeypatch):
    # Half the latents start with an encoder bias far below any pre-activation: they never fire.
    original = SAE.__init__

    def half_dead(self, *args, **kwargs):
        original(self, *args, **kwargs)
        with torch.no_grad():
            self.b_enc[: self.d_sae // 2] = -1e3

    monkeypatch.setattr(SAE, "__init__", half_dead)
    acts = _acts(n=1024)
    cfg = dict(d_sae=32, lr=1e-3, epochs=2, normalise_decoder=True, seed=1)
    sae, log = train_sae(acts, SAETrainConfig(**cfg))
    assert log["resamples"] == [] and sae_metrics(sae, acts)["dead_fraction"] >= 0.5
    sae, log = train_sae(acts, SAETrainConfig(**cfg, resample_window=5))
    revived = {i for event in log["resamples"] for i in event["latents"]}
    assert set(range(16)) <= revived
    assert sae_metrics(sae, acts)["dead_fraction"] < 0.1


def test_resample_by_hand():
    # Latent 1 is dead. Every input but one sits on b_dec, where an all-silent SAE reconstructs it exactly;
    # the one high-error input is [3, 4], so latent 1's decoder row becomes its direction [0.6, 0.8].
    sae = _set(SAE(2, 3), [[2.0, 0.0, 0.0], [0.0, 0.0, 4.0]], [-100.0] * 3, [0.0, 0.0],
               [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    acts = torch.cat([torch.zeros(7, 2), torch.tensor([[3.0, 4.0]])])
    for p in sae.parameters():  # Adam's state as after some steps: every moment 1
        opt.state[p] = {"step": torch.tensor(5.0), "exp_avg": torch.ones_like(p), "exp_avg_sq": torch.ones_like(p)}
    moments = {name: {k: v.clone() for k, v in opt.state[p].items()} for name, p in sae.named_parameters()}
    dead = torch.tensor([False, True, False])
    resample(sae, opt, acts, dead, torch.Generator().manual_seed(0))
    torch.testing.assert_close(sae.W_dec[1], torch.tensor([0.6, 0.8]))
    # encoder column: the direction times 0.2 x the mean norm of the alive encoder columns (2 and 4)
    torch.testing.assert_close(sae.W_enc[:, 1], torch.tensor([0.6, 0.8]) * 0.2 * 3.0)
    assert sae.b_enc[1] == 0.0 and sae.b_enc[0] == sae.b_enc[2] == -100.0
    torch.testing.assert_close(sae.W_dec[[0, 2]], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    for name, p in sae.named_parameters():
        for k in ("exp_avg", "exp_avg_sq"):
            new, old = opt.state[p][k], moments[name][k]
            if name == "W_enc":
                assert torch.count_nonzero(new[:, 1]) == 0 and torch.equal(new[:, [0, 2]], old[:, [0, 2]])
            elif name in ("b_enc", "_W_dec"):
                assert torch.count_nonzero(new[1]) == 0 and torch.equal(new[[0, 2]], old[[0, 2]])
            else:
                assert torch.equal(new, old)

    with pytest.raises(SAEError, match="only 1 of 8"):
        resample(sae, opt, acts, torch.tensor([True, True, False]), torch.Generator().manual_seed(0))


def test_a_non_positive_resample_window_is_refused():
    with pytest.raises(SAEError, match="resample_window"):
        train_sae(_acts(n=64), SAETrainConfig(d_sae=8, resample_window=0))


def test_training_leaves_the_global_random_state_alone():
    state = torch.get_rng_state()
    train_sae(_acts(n=64), SAETrainConfig(d_sae=8, resample_window=1))
    assert torch.equal(torch.get_rng_state(), state)


def test_loss_recovered_by_hand():
    assert S.loss_recovered(clean=1.0, spliced=1.5, ablated=3.0) == pytest.approx(0.75)
    assert S.loss_recovered(clean=1.0, spliced=4.0, ablated=3.0) == pytest.approx(-0.5)
    with pytest.raises(SAEError, match="ablated loss equals the clean loss"):
        S.loss_recovered(clean=1.0, spliced=1.0, ablated=1.0)


def test_metrics_of_a_perfect_and_a_silent_sae():
    acts = _acts(d=4)
    identity = _set(SAE(4, 8), torch.cat([torch.eye(4), -torch.eye(4)], 1).tolist(), [0.0] * 8, [0.0] * 4,
                    torch.cat([torch.eye(4), -torch.eye(4)], 0).tolist())
    m = sae_metrics(identity, acts)
    assert m["mse"] < 1e-10 and m["fvu"] < 1e-10
    silent = _set(SAE(4, 8), torch.zeros(4, 8).tolist(), [-1.0] * 8, [0.0] * 4)
    m = sae_metrics(silent, acts)
    assert m["dead_fraction"] == 1.0 and m["l0"] == 0.0 and m["fvu"] > 1.0 - 1e-6


def test_save_and_load_round_trip(tmp_path):
    for tied in (False, True):
        sae = SAE(6, 10, tied=tied, seed=7)
        sae.save(tmp_path / str(tied))
        back = SAE.load(tmp_path / str(tied))
        x = torch.randn(3, 6)
        assert back.tied == tied
        torch.testing.assert_close(back(x), sae(x), rtol=0, atol=0)
    with pytest.raises(SAEError, match="SAE.save"):
        SAE.load(tmp_path / "missing")


def test_cached_sae_hits_misses_and_rebuilds_a_corrupt_entry(tmp_path):
    calls = []

    def acts():
        calls.append(1)
        return _acts(n=128)

    cfg = SAETrainConfig(d_sae=16, epochs=1)
    key = {"model": "abc", "hook": "blocks.0.hook_mlp_out"}
    first, log = cached_sae(key, acts, cfg, root=tmp_path)
    again, log2 = cached_sae(key, acts, cfg, root=tmp_path)
    assert len(calls) == 1 and log2 == log and log["key"] == key
    torch.testing.assert_close(again.W_dec, first.W_dec, rtol=0, atol=0)

    cached_sae({**key, "hook": "blocks.1.hook_mlp_out"}, acts, cfg, root=tmp_path)
    cached_sae(key, acts, SAETrainConfig(d_sae=16, epochs=1, seed=1), root=tmp_path)
    assert len(calls) == 3

    (entry,) = [p for p in tmp_path.iterdir() if json.loads((p / "log.json").read_text())["key"] == key
                and json.loads((p / "log.json").read_text())["config"]["seed"] == 0]
    weights = entry / "sae.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    rebuilt, _ = cached_sae(key, acts, cfg, root=tmp_path)
    assert len(calls) == 4
    torch.testing.assert_close(rebuilt.W_dec, first.W_dec, rtol=0, atol=0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # an intact entry whose recorded key is not the request's is rebuilt, not used
    log_path = entry / "log.json"
    log_path.write_text(json.dumps({**json.loads(log_path.read_text()), "key": {**key, "hook": "elsewhere"}}))
    manifest = json.loads((entry / "MANIFEST.json").read_text())
    manifest["log.json"] = C.file_sha256(log_path)
    (entry / "MANIFEST.json").write_text(json.dumps(manifest))
    cached_sae(key, acts, cfg, root=tmp_path)
    assert len(calls) == 5
    assert json.loads(log_path.read_text())["key"] == key


def test_decoder_overlap():
    a, b = SAE(16, 64, seed=0), SAE(16, 64, seed=1)
    assert decoder_overlap(a, a) == 1.0
    assert decoder_overlap(a, b) < 0.05
    with pytest.raises(SAEError, match="same space"):
        decoder_overlap(a, SAE(8, 64))


def test_splice_with_an_identity_sae_changes_nothing():
    model = load_model("zoo:tiny-gpt2")
    d = model.cfg.d_model
    identity = _set(SAE(d, 2 * d), torch.cat([torch.eye(d), -torch.eye(d)], 1).tolist(), [0.0] * (2 * d),
                    [0.0] * d, torch.cat([torch.eye(d), -torch.eye(d)], 0).tolist())
    tokens = torch.arange(1, 9).unsqueeze(0)
    with torch.no_grad():
        clean = model(tokens)
        spliced = model.run_with_hooks(tokens, fwd_hooks=splice_hooks("blocks.0.hook_mlp_out", identity))
        broken = model.run_with_hooks(tokens, fwd_hooks=splice_hooks("blocks.0.hook_mlp_out", SAE(d, 2 * d, seed=5)))
    torch.testing.assert_close(spliced, clean, rtol=0, atol=1e-5)
    assert not torch.allclose(broken, clean, atol=1e-3)
    with pytest.raises(SAEError, match="width"):
        splice_hooks("blocks.0.hook_mlp_out", SAE(d + 1, 4))[0][1](torch.zeros(1, 2, d))


# ---------------------------------------------------------------------------------------------
# Inside a model: tokens, losses, and tuning through c and d

from claims.sae_rlhf import sae_tuning as T  # noqa: E402
from lib import sae as S  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return load_model("zoo:tiny-gpt2")


def test_right_padding_changes_no_loss(tiny):
    texts = ["Her name was Alex Hart .", "His name was John Smith . Tomorrow at lunch time John"]
    tokens, mask = text_tokens(tiny, texts, bos_in_mask=True)
    assert mask.sum(1).tolist() == [len(tiny.tokenizer(t, add_special_tokens=False)["input_ids"]) + 2 for t in texts]
    per_row = [S.lm_loss(tiny, *text_tokens(tiny, [t], bos_in_mask=True)) for t in texts]
    counts = (mask.sum(1) - 1).tolist()
    expected = sum(l * c for l, c in zip(per_row, counts)) / sum(counts)
    assert S.lm_loss(tiny, tokens, mask) == pytest.approx(expected, rel=1e-5)
    assert S.hook_acts(tiny, tokens, mask, "blocks.0.hook_mlp_out").shape == (int(mask.sum()), tiny.cfg.d_model)
    with pytest.raises(S.HookNameError, match="hook_mlp_out"):
        S.hook_acts(tiny, tokens, mask, "blocks.0.mlp_out")


def test_zero_hooks_zero_the_activation(tiny):
    tokens, mask = text_tokens(tiny, ["Her name was Alex Hart ."], bos_in_mask=True)
    seen = {}
    hooks = zero_hooks("blocks.0.hook_mlp_out") + [("blocks.0.hook_mlp_out", lambda a, hook: seen.setdefault("a", a))]
    with torch.no_grad():
        tiny.run_with_hooks(tokens, fwd_hooks=hooks)
    assert torch.count_nonzero(seen["a"]) == 0


def test_latent_tuning_at_start_is_the_sae_and_by_hand():
    sae = _set(SAE(2, 2), [[1.0, -1.0], [0.0, 1.0]], [0.5, -3.0], [1.0, 0.0], [[2.0, 4.0], [7.0, 7.0]])
    tuning = T.LatentTuning(sae)
    x = torch.randn(5, 2)
    torch.testing.assert_close(tuning(x), sae(x), rtol=0, atol=0)
    with torch.no_grad():  # pre = [0.5, -1] at x = [1, 2]; c * pre + d = [-1.0, 1.0] -> z = [0, 1]
        tuning.c.copy_(torch.tensor([-2.0, -1.0]))
        tuning.d.copy_(torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(tuning(torch.tensor([1.0, 2.0])), torch.tensor([8.0, 7.0]))


def test_pair_tokens_mark_the_completion(tiny):
    pairs = [{"prompt": "Her name was Alex", "chosen": " Hart .", "rejected": " Carroll . Tomorrow"}]
    pt = T.pair_tokens(tiny, pairs)
    ids = lambda s: tiny.tokenizer(s, add_special_tokens=False)["input_ids"]
    targets = pt.rejected[0, 1:][pt.rejected_completion[0]].tolist()
    assert targets == ids(" Carroll . Tomorrow") + [tiny.tokenizer.eos_token_id]
    assert pt.chosen[0, 1:][pt.chosen_completion[0]].tolist() == ids(" Hart .") + [tiny.tokenizer.eos_token_id]
    with torch.no_grad():
        logits = tiny(pt.chosen)
        # <bos> Her name was Alex | Hart . <eos>: the logits at positions 4, 5, 6 predict the completion
        by_hand = sum(logits[0, i].log_softmax(-1)[pt.chosen[0, i + 1]] for i in (4, 5, 6))
        got = T.completion_logprobs(tiny, pt.chosen, pt.chosen_completion, [])
    torch.testing.assert_close(got[0], by_hand, rtol=1e-5, atol=1e-5)


def _tiny_pairs(tiny) -> T.PairTokens:
    pairs = [{"prompt": f"{first} name was Alex", "chosen": f" {good} .", "rejected": f" {bad} ."}
             for first in ("Her", "His") for good, bad in (("Hart", "Carroll"), ("Smith", "Jones"))]
    return T.pair_tokens(tiny, pairs)


def test_tuning_moves_c_and_d_alone(tiny, tmp_path, monkeypatch):
    hook = "blocks.1.hook_mlp_out"
    sae = SAE(tiny.cfg.d_model, 4 * tiny.cfg.d_model, seed=2)
    before = T.parameter_digest(tiny, sae)
    pairs = _tiny_pairs(tiny)
    cfg = T.TuningConfig(steps=5, batch_size=4, lr=0.1)
    tuning, log = T.tune_latents(tiny, sae, hook, pairs, cfg)
    assert log["trainable"] == {"c": sae.d_sae, "d": sae.d_sae}
    assert log["changed"] == ["tuning.c", "tuning.d"]
    assert log["frozen_digest_before"] == log["frozen_digest_after"] == T.parameter_digest(tiny, sae) == before
    assert all(p.grad is None for p in [*tiny.parameters(), *sae.parameters()])
    assert not torch.equal(tuning.c, torch.ones(sae.d_sae)) or not torch.equal(tuning.d, torch.zeros(sae.d_sae))
    assert log["loss"][-1] < log["loss"][0]

    calls = []
    tune = T.tune_latents
    monkeypatch.setattr(T, "tune_latents", lambda *a: calls.append(1) or tune(*a))
    first, _ = T.cached_tuning({"m": 1}, tiny, sae, hook, pairs, cfg, root=tmp_path)
    again, _ = T.cached_tuning({"m": 1}, tiny, sae, hook, pairs, cfg, root=tmp_path)
    assert len(calls) == 1
    torch.testing.assert_close(again.d, first.d, rtol=0, atol=0)
    (entry,) = tmp_path.iterdir()
    (entry / T.WEIGHTS).write_bytes(b"junk")
    T.cached_tuning({"m": 1}, tiny, sae, hook, pairs, cfg, root=tmp_path)
    assert len(calls) == 2
    other = _tiny_pairs(tiny)  # the same pairs but one token: another entry
    other.chosen[0, 1] = other.chosen[0, 2]
    T.cached_tuning({"m": 1}, tiny, sae, hook, other, cfg, root=tmp_path)
    assert len(calls) == 3
    with pytest.raises(SAEError, match="optim"):
        T.tune_latents(tiny, sae, hook, pairs, T.TuningConfig(steps=1, optim="lion"))


def test_changed_parameters_name_exactly_what_moved():
    sae = SAE(4, 8, seed=0)
    tuning = T.LatentTuning(sae)
    model = torch.nn.Linear(3, 2)
    before = T.parameter_digests(model=model, tuning=tuning)
    assert T.changed_parameters(before, T.parameter_digests(model=model, tuning=tuning)) == []
    with torch.no_grad():
        tuning.d[3] = 0.5
        model.bias[0] = torch.nextafter(model.bias[0], torch.tensor(10.0))
        sae.W_enc[0, 0] += 1.0
    after = T.parameter_digests(model=model, tuning=tuning)
    assert T.changed_parameters(before, after) == ["model.bias", "tuning.d", "tuning.sae.W_enc"]


def test_sae_figures_draw_with_one_series_and_a_lower_loss():
    import matplotlib.pyplot as plt

    from claims.sae_rlhf import sae_plots

    fig = sae_plots.training_curves({"loss": [3.0, 2.0, 1.0]}, ["loss"], title="one")
    assert len(fig.axes) == 1
    plt.close(fig)
    fig = sae_plots.splice_loss_bars(2.0, [2.5, 1.5], 0, title="t")
    heights = [p.get_height() for p in fig.axes[0].patches[2:]]  # the extra-loss bars
    assert heights == pytest.approx([0.5, -0.5])
    plt.close(fig)


def test_mean_hooks_put_the_mean_everywhere(tiny):
    tokens, mask = text_tokens(tiny, ["Her name was Alex Hart .", "His name was John"], bos_in_mask=True)
    hook = "blocks.0.hook_mlp_out"
    mean = S.hook_acts(tiny, tokens, mask, hook).mean(0)
    seen = {}
    with torch.no_grad():
        look = [(hook, lambda a, hook: seen.setdefault("a", a))]
        tiny.run_with_hooks(tokens, fwd_hooks=mean_hooks(hook, mean) + look)
    torch.testing.assert_close(seen["a"], mean.expand_as(seen["a"]))
    losses = S.splice_losses(tiny, SAE(tiny.cfg.d_model, 8), tokens, mask, [hook], mean_ablation=True)
    assert losses["mean_ablated"][0] == pytest.approx(S.lm_loss(tiny, tokens, mask, mean_hooks(hook, mean)))


def test_parameter_digest_sees_one_ulp():
    sae = SAE(4, 8, seed=0)
    before = T.parameter_digest(sae)
    with torch.no_grad():
        sae.b_dec[0] = torch.nextafter(sae.b_dec[0], torch.tensor(1.0))
    assert T.parameter_digest(sae) != before


def test_moved_latents_and_their_top_tokens(tiny):
    tokens, mask = text_tokens(tiny, ["Her name was Alex Hart .", "His name was John Smith ."], bos_in_mask=True)
    acts = S.hook_acts(tiny, tokens, mask, "blocks.0.hook_mlp_out")
    sae = SAE(tiny.cfg.d_model, 8, seed=0)
    tuning = T.LatentTuning(sae)
    with torch.no_grad():
        tuning.d[5] = 3.0
        tuning.d[2] = 1.0
    assert [m["latent"] for m in T.moved_latents(tuning, acts, k=2)] == [5, 2]
    z = sae.encode(acts)[:, 0]
    top = T.top_activating_tokens(tiny, sae, tokens, mask, acts, 0, k=1)
    b, p = mask.nonzero()[z.argmax()].tolist()
    assert top[0].endswith(f"[{tiny.tokenizer.decode([tokens[b, p].item()]).strip()}]")
