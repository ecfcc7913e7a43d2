"""claims.induction_tutorial.induction against the tutorial's own loops (hooks, one forward pass per patch) and
transformer_lens.head_detector, on the tiny zoo models."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformer_lens.utilities import get_act_name

from claims.induction_tutorial import induction as I
from lib.causal import leftward_leak
from lib.heads import composition_scores
from lib.metrics import logit_diff
from lib.prompts import differing_positions

PROMPT = "Her name was Alex Hart . Tomorrow at lunch time Alex"
PARAMS = {
    "prompt": PROMPT,
    "answer": " Hart",
    "corruptions": {
        "last_name": "Her name was Alex Carroll . Tomorrow at lunch time Alex",
        "first_first_name": "Her name was Sarah Hart . Tomorrow at lunch time Alex",
        "second_first_name": "Her name was Alex Hart . Tomorrow at lunch time Sarah",
    },
}


@pytest.fixture(scope="module")
def params(model):
    """The canonical parameters; positions shift by one where the model prepends no BOS."""
    return {**PARAMS, "positions": I.name_positions(model, PROMPT, "Alex", "Hart")}


@pytest.fixture(scope="module")
def task(model):
    return I.task_from_params(model, PARAMS)


def _tutorial_patch(model, task, corruption, name, index):
    """The tutorial's way: one forward pass with a hook that overwrites the slice from the corrupt cache."""
    _, cache = model.run_with_cache(task.corrupted[corruption])

    def hook(act, hook):
        act[index] = cache[hook.name][index]
        return act

    with torch.no_grad():
        logits = model.run_with_hooks(task.tokens, fwd_hooks=[(name, hook)])
    return logits


def test_task_tokens_and_rival(model, task, params):
    bos = int(model.cfg.default_prepend_bos and model.tokenizer.bos_token_id is not None)
    assert task.tokens.shape == (1, 11 + bos)
    assert params["positions"] == {"first_name": 3 + bos, "last_name": 4 + bos, "final": 10 + bos}
    assert [t.split(":", 1)[1] for t in task.labels][3 + bos : 5 + bos] == ["Alex", "Hart"]
    hart, carroll = task.answers[0].tolist()
    assert model.tokenizer.decode([hart]).strip() == "Hart"
    assert model.tokenizer.decode([carroll]).strip() == "Carroll"


def test_resid_flow_matches_the_tutorial_loop(model, task, params):
    flow = I.resid_flow(model, task, "last_name")
    names = I.flow_hooks(model)
    assert flow.shape == (model.cfg.n_layers + 1, task.n_pos)
    for row, name in enumerate(names):
        for pos in (0, params["positions"]["last_name"], params["positions"]["final"]):
            logits = _tutorial_patch(model, task, "last_name", name, (slice(None), pos))
            assert float(flow[row, pos]) == pytest.approx(float(logit_diff(logits, task.answers)), abs=1e-4)


def test_leftward_leak_sees_a_model_that_reads_the_future(model, task, params):
    """IND-04's negative: with a hook adding every position's mean residual stream to each position (which no
    causal model does), patching at p changes the logits before p, and leftward_leak measures it."""
    p = params["positions"]["last_name"]
    donor = task.corrupted["last_name"]
    assert leftward_leak(model, donor, task.tokens, 0, p)[0] <= 1e-5
    see_ahead = lambda resid, hook: resid + resid.mean(1, keepdim=True)
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", see_ahead)]):
        before, after = leftward_leak(model, donor, task.tokens, 0, p)
    assert before > 1e-3 and after > 0


def test_resid_flow_is_causal(model, task, params):
    """Nothing differs before the last name, so patching there changes nothing; the final position after
    the last block gives the corrupted run (whatever the model)."""
    diffs = I.logit_diffs(model, task)
    flow = I.resid_flow(model, task, "last_name")
    p = params["positions"]["last_name"]
    torch.testing.assert_close(flow[:, :p], torch.full((flow.shape[0], p), diffs["clean"]), atol=1e-5, rtol=0)
    assert float(flow[-1, -1]) == pytest.approx(diffs["last_name"], abs=1e-4)


def test_head_patching_matches_the_tutorial_loop(model, task, params):
    hp = I.head_patching(model, task, "last_name")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    n, p = task.n_pos, params["positions"]["last_name"]
    assert hp.all_pos.shape == (L, H) and hp.by_pos.shape == (L * H, n)
    for layer, head in [(0, 1), (L - 1, H - 1)]:
        name = get_act_name("z", layer)
        logits = _tutorial_patch(model, task, "last_name", name, (slice(None), slice(None), head))
        assert float(hp.all_pos[layer, head]) == pytest.approx(float(logit_diff(logits, task.answers)), abs=1e-4)
        logits = _tutorial_patch(model, task, "last_name", name, (slice(None), n - 1, head))
        assert float(hp.by_pos[layer * H + head, n - 1]) == pytest.approx(float(logit_diff(logits, task.answers)), abs=1e-4)
    # before the last name, nothing differs between the runs
    torch.testing.assert_close(hp.by_pos[:, :p], torch.full_like(hp.by_pos[:, :p], hp.clean), atol=1e-5, rtol=0)


def test_patched_ranks_match_the_tutorial_patch(model, task, params):
    p = params["positions"]["last_name"]
    got = I.patched_ranks(model, task, "last_name", 0, p)
    logits = _tutorial_patch(model, task, "last_name", get_act_name("resid_post", 0), (slice(None), p))
    final = logits[0, -1]
    for key, token in zip(("answer", "rival"), task.answers[0].tolist()):
        assert got[key] == 1 + int((final > final[token]).sum())


def test_class_scores_rank_heads_as_head_detector_does(model, task, params):
    scores = I.class_scores(model, task.tokens)
    n, pos = task.n_pos, params["positions"]
    rows = {"previous_token": n - 1, "duplicate_token": 1, "induction": 1}  # positions with a target cell
    for kind, n_rows in rows.items():
        detector = I.detector_scores(model, PROMPT, kind)
        torch.testing.assert_close(scores[kind] * n_rows / n, detector, atol=1e-5, rtol=1e-4)
        assert I.top_head(scores[kind]) == I.top_head(detector)
    # read off the pattern directly: the induction score is the attention from the final Alex to Hart
    pattern = I.head_pattern(model, task.tokens, "1.0")
    assert I.score_of(scores["induction"], "1.0") == pytest.approx(float(pattern[-1, pos["last_name"]]), abs=1e-6)
    assert I.score_of(scores["duplicate_token"], "1.0") == pytest.approx(float(pattern[-1, pos["first_name"]]), abs=1e-6)


def test_classify_and_ranking_by_hand():
    scores = {"previous_token": torch.tensor([[0.9, 0.1], [0.2, 0.1]]),
              "induction": torch.tensor([[0.0, 0.2], [0.1, 0.7]])}
    assert I.classify(scores, 0.5) == {"0.0": "previous_token", "0.1": "other", "1.0": "other", "1.1": "induction"}
    assert I.top_head(scores["induction"]) == "1.1"
    assert I.top_head(scores["previous_token"], layers=[1]) == "1.0"
    assert I.ranked_heads(torch.tensor([[0.1, -3.0], [2.0, 0.0]])) == ["0.1", "1.0", "0.0", "1.1"]


def test_flow_summaries_by_hand():
    clean = 2.0
    flow = torch.tensor([
        [2.0, -1.0, 2.0, 2.0],  # embeddings: only position 1 matters
        [2.0, -1.0, 2.0, 1.5],  # after L0: still at 1
        [2.0, 1.9, 2.0, -1.0],  # after L1: moved to the final position
    ])
    assert I.argmax_positions(flow, clean) == [1, 1, 3]
    assert I.transition_layer(flow, clean, source=1, final=3) == 1
    assert I.transition_layer(flow[:2], clean, source=1, final=3) is None


def test_composition_against_its_layer_pair(model):
    comp = I.composition(model, "K", "0.1", "1.2")
    full = composition_scores(model, "K")
    assert comp.score == pytest.approx(float(full[0, 1, 1, 2]))
    pairs = full[0, :, 1, :].flatten()
    assert comp.percentile == pytest.approx(float((pairs < comp.score).float().mean()))
    with pytest.raises(ValueError, match="earlier layer"):
        I.composition(model, "Q", "1.0", "0.1")


def test_name_family(model, params):
    family = I.name_family(model, params, 12, seed=3)
    assert len(family.prompts) == 12 and len(set(family.prompts)) == 12
    assert PROMPT not in family.prompts
    for prompt, answer, corrupt, (first, last, rival) in zip(family.prompts, family.answers,
                                                             family.corruptions["last_name"], family.names):
        assert prompt == PROMPT.replace("Alex", first).replace("Hart", last) and answer == " " + last
        task = I.name_task(model, prompt, answer, {"last_name": corrupt})
        assert model.tokenizer.decode([int(task.answers[0, 1])]).strip() == rival != last
    assert I.name_family(model, params, 12, seed=3).prompts == family.prompts  # a function of the seed
    small = I.name_family(model, params, 3)
    effects = I.family_head_effects(model, small)
    assert len(effects) == 3 and all(e.shape == (model.cfg.n_layers, model.cfg.n_heads) for e in effects)
    for prompt, answer, corrupt, batched in zip(small.prompts, small.answers, small.corruptions["last_name"], effects):
        alone = I.head_patching(model, I.name_task(model, prompt, answer, {"last_name": corrupt}), by_pos=False)
        assert torch.allclose(batched, alone.effect, atol=1e-4)  # one batched sweep = each prompt's own
    heads = ["1.3", "0.2"]
    some = I.family_head_effects(model, I.name_family(model, params, 3), heads)
    for every, only in zip(effects, some):
        assert torch.allclose(only[1, 3], every[1, 3], atol=1e-5) and torch.allclose(only[0, 2], every[0, 2], atol=1e-5)
        assert int(only.isnan().sum()) == only.numel() - 2
        assert I.top_of(only, heads) == max(heads, key=lambda h: abs(I.effect_of(every, h)))


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_name_pair_gives_an_aligned_task(model, params, data):
    """Whatever single-token names fill the template, the corruption differs from the clean prompt at the
    last-name position only, and the rival is the corruption's last name."""
    firsts, lasts = I.single_token_names(model, I.FIRST_NAMES), I.single_token_names(model, I.LAST_NAMES)
    first = data.draw(st.sampled_from(firsts))
    last, rival = data.draw(st.lists(st.sampled_from(lasts), min_size=2, max_size=2, unique=True))
    template = I.name_template(PROMPT, "Alex", "Hart")
    task = I.name_task(model, template.format(first=first, last=last), " " + last,
                       {"last_name": template.format(first=first, last=rival)})
    assert differing_positions(task.tokens, task.corrupted["last_name"]) == [params["positions"]["last_name"]]
    assert model.tokenizer.decode([int(task.answers[0, 1])]).strip() == rival
