"""Tokenisation helpers: single-token answers, clean and corrupted prompts of the same length."""
from __future__ import annotations

import pytest
import torch

from lib.errors import PromptError
from lib.prompts import answer_token, answer_tokens, differing_positions, paired_tokens, str_tokens, to_tokens


def test_answer_token(model):
    assert str_tokens(model, [answer_token(model, " Hart")]) == ["Hart"]


def test_answer_of_two_tokens_names_them(model):
    with pytest.raises(PromptError, match=r"2 tokens.*'Alex', 'Hart'"):
        answer_token(model, " Alex Hart")


def test_answer_outside_vocabulary(model):
    with pytest.raises(PromptError, match="not in the vocabulary"):
        answer_token(model, " Zanzibar")


def test_answer_tokens_shapes(model):
    one = answer_tokens(model, (" bad", " good"))
    assert one.shape == (1, 2)
    many = answer_tokens(model, [(" Hart", " Carroll"), (" Smith", " Jones")])
    assert many.shape == (2, 2)


def test_paired_tokens(model):
    clean, corrupted = paired_tokens(model, "Her name was Alex Hart", "Her name was Alex Carroll")
    assert clean.shape == corrupted.shape
    bos = int(model.cfg.default_prepend_bos)
    assert differing_positions(clean, corrupted) == [4 + bos]


def test_lengths_differ_shows_both_tokenisations(model):
    with pytest.raises(PromptError) as info:
        paired_tokens(model, "Her name was Alex Hart", "Her name was Sarah Jones Carroll")
    message = str(info.value)
    assert "'Hart'" in message and "'Jones', 'Carroll'" in message and "different lengths" in message


def test_batch_sizes_must_pair(model):
    with pytest.raises(PromptError, match="pair them"):
        paired_tokens(model, ["Her name was Alex", "His name was John"], ["Her name was Sarah"])


def test_list_of_prompts_of_unequal_length(model):
    with pytest.raises(PromptError, match="different lengths"):
        to_tokens(model, ["Her name was Alex", "His name was"])


def test_tokens_pass_through(model):
    t = torch.tensor([5, 6, 7])
    assert to_tokens(model, t).shape == (1, 3)


def test_a_prompt_longer_than_the_context_is_refused_not_cut(model):
    with pytest.raises(PromptError, match="longer than the model's context"):
        to_tokens(model, "Her name was Alex Hart . " * 40)


@pytest.fixture(scope="module")
def review_lm():
    from lib.loading import load_model

    return load_model("zoo:review-lm")


def test_the_built_in_review_family_says_what_it_left_out_and_why(review_lm):
    from fixtures.prompts import ADJECTIVE_PAIRS, REVIEW_TEMPLATES, review_family

    family = review_family(review_lm)
    assert family.source == "built-in" and len(family.members) >= 2
    assert len(family.members) + sum(family.left_out.values()) == len(REVIEW_TEMPLATES) * len(ADJECTIVE_PAIRS)
    assert set(family.left_out) <= {"an answer is not one token", "a word of the prompt is not in the vocabulary"}


def test_a_subject_family_as_templates_or_rows(review_lm):
    from fixtures.prompts import review_family

    table = review_family(review_lm, {"templates": ["This movie was really", "The film was quite"],
                                      "answers": [[" bad", " good"], [" bad", " Zanzibar"]]})
    assert [(m.prompt, m.answers) for m in table.members] == [("This movie was really", (" bad", " good")),
                                                             ("The film was quite", (" bad", " good"))]
    assert table.left_out == {"an answer is not one token": 2} and table.source == "the subject's"
    rows = review_family(review_lm, [{"prompt": "This movie was really", "answers": [" bad", " good"]},
                                     {"prompt": "This Zanzibar was really", "answers": [" bad", " good"]}])
    assert len(rows.members) == 1 and rows.left_out == {"a word of the prompt is not in the vocabulary": 1}
