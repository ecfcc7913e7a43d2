"""Discover, then confirm: parameters chosen on half a family, ties never written as choices, subject
files the registry reads, and the zoo's registered heads, layers and positions as discovery finds them."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures import discover as D
from fixtures import subjects as registry
from lib.stats import Interval, choose


def test_choice_leads_or_ties():
    clear = choose([{"a": 1.0, "b": 0.5}, {"a": 1.1, "b": 0.4}, {"a": 0.9, "b": 0.6}])
    assert clear.chosen == ("a",) and clear.runner_up == "b" and not clear.tie and clear.lead.low > 0
    swapped = choose([{"a": 1.0, "b": 0.9}, {"a": 0.8, "b": 1.0}, {"a": 1.0, "b": 0.95}])
    assert swapped.tie  # a lead that changes sign between prompts is no choice
    one = choose([{"a": 1.0, "b": 0.0}])
    assert not one.tie and one.lead.n == 1  # one prompt: neither a tie nor confirmed


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(-10, 10), min_size=3, max_size=3), min_size=2, max_size=12), st.integers(1, 2))
def test_choice_picks_the_highest_means(rows, k):
    per_prompt = [dict(zip("abc", r)) for r in rows]
    c = choose(per_prompt, k=k)
    means = [c.means[o] for o in c.chosen]
    assert means == sorted(means, reverse=True) and all(m >= c.means[c.runner_up] for m in means)


def test_split_is_seeded_and_disjoint():
    found_on, held_out = D.split(range(11))
    assert D.split(range(11)) == (found_on, held_out)
    assert not set(found_on) & set(held_out) and len(found_on) + len(held_out) == 11


def test_subject_file_is_read_by_the_registry_with_ties_left_out(tmp_path):
    lead = Interval(0.3, 0.1, 0.5, 8)
    tie = Interval(0.01, -0.2, 0.2, 8)
    from lib.stats import Choice

    clear = D.Pick("5.4", Choice(("5.4",), "5.5", {"5.4": 1.0, "5.5": 0.7}, lead), "5.5", "the top head")
    tied = D.Pick("mlp_out.5", Choice(("mlp_out.5",), "attn_out.5", {"mlp_out.5": 1.0, "attn_out.5": 0.98}, tie),
                  "attn_out.5", "the top component")
    found = {"RLHF-07": D.Found({"head": clear}), "RLHF-03": D.Found({"component": tied}),
             "RLHF-01": D.Found()}
    tables, notes = D.claim_tables(found, ("RLHF-01", "RLHF-03", "RLHF-07"), {"RLHF-07": {"min_margin": 0.2}})
    assert "RLHF-03" not in tables and any("tie" in n for n in notes["RLHF-03"])
    assert tables["RLHF-07"] == {"min_margin": 0.2, "head": "5.4"}
    text = D.subject_toml("mine", "a pair", {"base": "zoo:review-lm", "tuned": "zoo:review-lm-negative"},
                          {"prompt": "This movie was really", "answers": [" bad", " good"],
                           "family": [{"prompt": "The film was quite", "answers": [" bad", " good"]}]},
                          tables, notes, "a test")
    path = tmp_path / "mine.toml"
    path.write_text(text)
    (subject,) = registry.load(path).values()
    assert subject.claims["RLHF-07"]["head"] == "5.4" and "RLHF-03" not in subject.claims
    assert subject.params["family"][0]["prompt"] == "The film was quite"


# The zoo's registered parameters are what discovery finds; where it finds a tie (or nothing), the claim is
# not registered, or registered refuted, never as holding. The pairs' registered `family` is the held-out
# half of the built-in family, which discovery splits afresh.
@pytest.mark.parametrize("name", ["review-pair", "fx-review-bpe-pair", "names-2l", "fx-names-lower"])
def test_registry_agrees_with_discovery(name):
    subject = registry.load_registry()[name]
    params = {k: v for k, v in subject.params.items() if k != "family"}
    d = D.discover_subject(subject.checkpoints, params, D.settings_of(subject))
    if "family" in subject.params:
        held_out = {row["prompt"] for row in d.params["family"]}
        assert held_out <= set(subject.params["family"]["templates"]), f"{name}: the registered family is not the held-out half"
    for cid, found in d.found.items():
        if cid not in subject.claims:
            continue
        if found.ties or not found.params:
            assert subject.refutation(cid) is not None, f"{name} {cid}: discovery makes no choice ({found.ties or found.note}) but the registry expects it to hold"
            continue
        params = subject.claim_params(cid)
        for key, pick in found.params.items():
            assert params.get(key) == pick.value, f"{name} {cid}: {key} registered {params.get(key)!r}, discovered {pick.value!r}"


def test_without_a_family_every_parameter_is_unconfirmed():
    """One canonical prompt: discovery and confirmation would be the same data, so nothing is confirmed
    and nothing is called a tie."""
    from fixtures import zoo  # noqa: F401  (registers zoo: references)
    from lib.loading import load_model

    base, tuned = load_model("zoo:review-lm"), load_model("zoo:review-lm-negative")
    params = {"prompt": "This movie was really", "answers": [" bad", " good"],
              "family": [{"prompt": "This movie was really", "answers": [" bad", " good"]}]}
    found, held_out, where = D.discover_pair(base, tuned, params)
    assert held_out == [] and "canonical prompt alone" in where
    picks = [p for f in found.values() for p in f.params.values() if p.choice is not None]
    assert picks and all(not p.choice.tie and "unconfirmed" in D.describe(p) for p in picks)
    assert found["RLHF-07"].params["head"].value == "5.4"
