"""claims.nanda_grokking.fourier on hand-built embeddings, logits and progress curves."""
from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from claims.nanda_grokking import fourier as FO

ODD_P = st.sampled_from([5, 7, 11, 13, 17])


def _grid(p: int) -> torch.Tensor:
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    return a.flatten(), b.flatten()


@settings(max_examples=30, deadline=None)
@given(p=ODD_P, data=st.data())
def test_pure_cosine_embedding_has_all_its_power_in_one_frequency(p, data):
    w = data.draw(st.integers(1, p // 2))
    phase = data.draw(st.floats(0, 2 * math.pi))
    direction = torch.tensor(data.draw(st.lists(st.floats(-2, 2), min_size=3, max_size=3)))
    direction = direction + torch.tensor([3.0, 0, 0])  # never the zero vector
    x = torch.arange(p, dtype=torch.float64)
    embed = torch.cos(2 * math.pi * w * x / p + phase)[:, None] * direction[None, :].double() + 0.7
    power = FO.power_spectrum(embed.float())
    assert power.shape == (p // 2,)
    assert FO.power_share(power, [w]) == pytest.approx(1.0, abs=1e-5)
    assert FO.top_frequencies(power, 1) == [w]


def test_two_frequencies_share_power_by_their_squared_amplitudes():
    p, x = 13, torch.arange(13, dtype=torch.float64)
    embed = torch.stack([torch.cos(2 * math.pi * 2 * x / p), 2 * torch.sin(2 * math.pi * 5 * x / p)], -1)
    power = FO.power_spectrum(embed.float())
    assert FO.power_share(power, [2]) == pytest.approx(1 / 5, abs=1e-5)
    assert FO.power_share(power, [5]) == pytest.approx(4 / 5, abs=1e-5)
    assert FO.top_frequencies(power, 2) == [2, 5]


@settings(max_examples=20, deadline=None)
@given(p=ODD_P)
def test_sum_directions_are_orthonormal_and_orthogonal_to_constants(p):
    u = FO.sum_directions(p, range(1, p // 2 + 1))
    assert u.shape == (p * p, 2 * (p // 2))
    torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1], dtype=u.dtype), atol=1e-10, rtol=0)
    assert u.sum(0).abs().max() < 1e-9


@settings(max_examples=20, deadline=None)
@given(p=ODD_P, seed=st.integers(0, 1000))
def test_restricting_to_every_frequency_keeps_logits_that_depend_on_a_plus_b(p, seed):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(p, 4, generator=g)  # logits f(a + b mod p, c)
    a, b = _grid(p)
    logits = table[(a + b) % p].double()
    torch.testing.assert_close(FO.restricted_logits(logits, p, range(1, p // 2 + 1)), logits)
    torch.testing.assert_close(FO.excluded_logits(logits, p, range(1, p // 2 + 1)),
                               logits.mean(0, keepdim=True).expand_as(logits))


@settings(max_examples=20, deadline=None)
@given(p=ODD_P, seed=st.integers(0, 1000), data=st.data())
def test_restricted_and_excluded_logits_split_any_logits(p, seed, data):
    freqs = data.draw(st.lists(st.integers(1, p // 2), unique=True, max_size=p // 2))
    logits = torch.randn(p * p, 3, generator=torch.Generator().manual_seed(seed)).double()
    restricted, excluded = FO.restricted_logits(logits, p, freqs), FO.excluded_logits(logits, p, freqs)
    torch.testing.assert_close(restricted + excluded, logits + logits.mean(0, keepdim=True))
    # every frequency: what is kept is the mean over the p inputs with the same a + b
    a, b = _grid(p)
    s = (a + b) % p
    by_sum = torch.stack([logits[s == k].mean(0) for k in range(p)])[s]
    torch.testing.assert_close(FO.restricted_logits(logits, p, range(1, p // 2 + 1)), by_sum)


def test_no_frequencies_restricts_to_the_mean_and_excludes_nothing():
    logits = torch.randn(25, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(FO.excluded_logits(logits, 5, []), logits)
    torch.testing.assert_close(FO.restricted_logits(logits, 5, []), logits.mean(0, keepdim=True).expand_as(logits))


@pytest.mark.parametrize("freqs", [[0], [7], [2, 2], [-1]])
def test_bad_frequencies_are_refused(freqs):
    with pytest.raises(FO.FourierError, match="distinct integers in 1..6"):
        FO.sum_directions(13, freqs)


def _task(p: int, train_share: float = 0.5) -> FO.ModularTask:
    pairs = torch.stack(_grid(p), -1)
    cut = int(train_share * len(pairs))
    return FO.ModularTask(p, torch.arange(p), p, pairs[:cut], pairs[cut:])


def test_loss_and_accuracy_of_grid_logits():
    p = 7
    task = _task(p)
    a, b = _grid(p)
    logits = torch.zeros(p * p, p)
    logits[torch.arange(p * p), (a + b) % p] = 20.0
    loss, acc = FO.loss_acc(logits, task, task.test)
    assert acc == 1.0 and loss < 1e-6
    wrong = logits.roll(1, dims=1)
    assert FO.loss_acc(wrong, task, task.train)[1] == 0.0
    assert FO.loss_acc(torch.zeros(p * p, p), task, task.train)[0] == pytest.approx(math.log(p), rel=1e-6)


def test_task_tokens_are_a_b_eq():
    task = FO.ModularTask(5, torch.tensor([10, 11, 12, 13, 14]), 99, torch.zeros(0, 2), torch.zeros(0, 2))
    assert task.tokens(torch.tensor([[1, 4], [0, 0]])).tolist() == [[11, 14, 99], [10, 10, 99]]
    assert len(task.all_pairs) == 25 and task.all_pairs[7].tolist() == [1, 2]


def test_training_split_read_from_the_log_beside_or_above_a_step(tmp_path):
    (tmp_path / "step-00010").mkdir()
    (tmp_path / "train_log.json").write_text(json.dumps({"train_pairs": [[0, 1]], "test_pairs": [[1, 1], [2, 0]]}))
    for where in (tmp_path, tmp_path / "step-00010"):
        train, test = FO.training_split(where)
        assert train.tolist() == [[0, 1]] and test.tolist() == [[1, 1], [2, 0]]


def test_training_split_without_a_log_names_the_fix(tmp_path):
    with pytest.raises(FO.FourierError, match="training_log"):
        FO.training_split(tmp_path)
    (tmp_path / "train_log.json").write_text(json.dumps({"loss": []}))
    with pytest.raises(FO.FourierError, match="train_pairs"):
        FO.training_split(tmp_path)


class _Tokenizer:
    unk_token_id = 0

    def __init__(self, words):
        self.vocab = {w: i + 1 for i, w in enumerate(words)}

    def convert_tokens_to_ids(self, words):
        return [self.vocab.get(w, self.unk_token_id) for w in words]


class _Model:
    def __init__(self, words):
        self.tokenizer = _Tokenizer(words)


def test_number_ids_and_missing_numbers():
    ids, eq = FO.number_ids(_Model(["0", "1", "2", "="]), 3)
    assert ids.tolist() == [1, 2, 3] and eq == 4
    with pytest.raises(FO.FourierError, match="no single token for \\['3'\\]"):
        FO.number_ids(_Model(["0", "1", "2", "="]), 4)


def _curve(rows):
    keys = ("train_loss", "train_acc", "test_loss", "test_acc", "restricted_loss", "excluded_loss", "weight_norm")
    return [FO.Progress(step, **dict(zip(keys, row))) for step, row in rows]


GROKKING = [  # step: train loss, train acc, test loss, test acc, restricted, excluded, weight norm
    (0, (4.0, 0.01, 4.0, 0.01, 4.0, 4.0, 10.0)),
    (10, (0.1, 1.00, 3.0, 0.10, 3.5, 0.5, 12.0)),  # memorised
    (20, (0.1, 1.00, 2.8, 0.20, 2.0, 2.0, 11.0)),
    (30, (0.1, 1.00, 2.6, 0.30, 1.0, 3.0, 10.0)),  # cliff starts
    (40, (0.05, 1.00, 0.3, 0.98, 0.2, 3.5, 8.0)),
    (50, (0.05, 1.00, 0.11, 1.00, 0.1, 3.5, 7.0)),
]


def test_grokking_phases_by_hand():
    ph = FO.grokking_phases(_curve(GROKKING))
    assert (ph.memorised, ph.cleanup) == (10, 30)
    assert ph.memorisation_gap == pytest.approx(2.9)
    assert ph.restricted_drop == pytest.approx(2.5)
    assert ph.excluded_rise == pytest.approx((3.0 - 0.1) - (0.5 - 0.1))
    assert ph.cleanup_gap_ratio == pytest.approx(0.01 / 1.6)
    assert ph.final_test_acc == 1.0
    assert ph.weight_norm_change_in_cleanup == pytest.approx(-3.0)


@pytest.mark.parametrize("restricted_at_cliff", [2.6, 3.0])  # start gap (test - restricted) zero, negative
def test_cleanup_gap_ratio_without_a_gap_to_close_is_nan(restricted_at_cliff):
    rows = [list(r) for _, r in GROKKING]
    rows[3][4] = restricted_at_cliff
    ph = FO.grokking_phases(_curve(zip([s for s, _ in GROKKING], rows)))
    assert ph.cleanup == 30 and math.isnan(ph.cleanup_gap_ratio)


def test_grokking_phases_without_memorisation_or_without_a_later_checkpoint():
    never = [(s, (4.0, 0.5, 4.0, 0.1, 4.0, 4.0, 1.0)) for s in (0, 10, 20)]
    ph = FO.grokking_phases(_curve(never))
    assert (ph.memorised, ph.cleanup) == (None, None) and math.isnan(ph.restricted_drop)
    last = [*never[:2], (20, (0.1, 1.0, 4.0, 0.1, 4.0, 4.0, 1.0))]
    ph = FO.grokking_phases(_curve(last))
    assert (ph.memorised, ph.cleanup) == (20, None) and math.isnan(ph.cleanup_gap_ratio)
    with pytest.raises(FO.FourierError, match="increase strictly"):
        FO.grokking_phases(_curve([GROKKING[1], GROKKING[0]]))


def test_figures_draw():
    import matplotlib.pyplot as plt

    fig = FO.spectrum_figure(torch.tensor([1.0, 4.0, 0.5]), [2])
    assert "73% of the power" in fig.axes[0].get_title()
    plt.close(fig)
    plt.close(FO.progress_figure(_curve(GROKKING), FO.grokking_phases(_curve(GROKKING))))
