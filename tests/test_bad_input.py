"""Bad input is an error before anything is measured, never a verdict: every case a user can get wrong
(checkpoints, prompts, answers, parameters, options, subject files), run through the real claims with
hand-made checkpoints and subject files, asserting the exit status, the one line that names the problem
and the fix, and what the report holds.

Exit status: 0 every claim held (or was refuted as registered), 1 a claim was refuted, 4 bad input,
5 no claim collected, 6 a measurement broke off (tests/test_expectations.py covers 6 and the regression
rows of refutations that stop reproducing)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformer_lens.model_bridge  # noqa: F401  imported once: pytester's in-process runs re-import new modules
from safetensors.torch import load_file, save_file

from fixtures import report as report_mod
from fixtures.records import ClaimRecord
from tests.conftest import copy_checkpoint

ROOT = Path(__file__).resolve().parents[1]
BAD_INPUT, NO_CLAIM = 4, 5

NAMES = "Her name was Alex Hart . Tomorrow at lunch time Alex"
CORRUPTIONS = ('{ last_name = "Her name was Alex Carroll . Tomorrow at lunch time Alex", '
               'first_first_name = "Her name was Sarah Hart . Tomorrow at lunch time Alex", '
               'second_first_name = "Her name was Alex Hart . Tomorrow at lunch time Sarah" }')


def names_file(prompt: str = NAMES, answer: str = " Hart", claim: str = "IND-01", extra: str = "max_rank = 1") -> str:
    return (f"[subjects.mine]\n[subjects.mine.params]\nprompt = {json.dumps(prompt)}\nanswer = {json.dumps(answer)}\n"
            f"corruptions = {CORRUPTIONS}\n[subjects.mine.claims.{claim}]\n{extra}\n")


def pair_file(answers: str = '[" bad", " good"]', claim: str = "RLHF-01", extra: str = "",
              prompt: str = "This movie was really") -> str:
    return (f"[subjects.mine]\n[subjects.mine.params]\nprompt = {json.dumps(prompt)}\nanswers = {answers}\n"
            f"[subjects.mine.claims.{claim}]\n{extra}\n")


IND_02 = 'layer = 0\nmax_corrupt_rank = 3\nmin_clean_rank = 10\npositions = {{ first_name = 4, last_name = {last}, final = 11 }}'
PAIR = ("--checkpoint", "base=zoo:review-lm", "--checkpoint", "tuned=zoo:review-lm-negative")
NAMES_MODEL = ("--checkpoint", "zoo:names-2l")


@pytest.fixture
def claims(pytester):
    """Run the suite's claims on a subject file: (pytest result, report directory)."""

    def run(subject_file: str | None, *args: str):
        out = pytester.path / "out"
        argv = [str(ROOT / "claims"), "-c", str(ROOT / "pytest.ini"), "--rootdir", str(ROOT), "-p", "no:cacheprovider",
                "--report-dir", str(out), *args]
        if subject_file is not None:
            (pytester.path / "subject.toml").write_text(subject_file)
            argv += ["--subject-file", str(pytester.path / "subject.toml")]
        return pytester.runpytest_inprocess(*argv), out

    return run


def edited_copy(tmp_path: Path, name: str, *, drop: str | None = None, config: dict | None = None,
                tokenizer_json: str | None = None) -> Path:
    """A copy of zoo model `name` with one thing broken: a tensor dropped, config.json edited, or tokenizer.json replaced."""
    path = copy_checkpoint(name, tmp_path / f"{name}-edited")
    if drop is not None:
        weights = load_file(str(path / "model.safetensors"))
        del weights[drop]
        save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    if config is not None:
        cfg = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**cfg, **config}))
    if tokenizer_json is not None:
        (path / "tokenizer.json").write_text(tokenizer_json)
    return path


def bad_input_line(result) -> str:
    lines = [line for line in result.outlines if line.startswith("bad input: ")]
    assert lines, result.stdout.str()[-2000:]
    return "\n".join(lines)


def assert_bad_input(result, out: Path, *fragments: str, lines: int | None = None) -> None:
    assert result.ret == BAD_INPUT, result.stdout.str()[-2000:]
    text = bad_input_line(result)
    for f in fragments:
        assert f in text, text
    if lines is not None:
        assert len(text.splitlines()) == lines, text
    assert "Traceback" not in result.stdout.str()
    assert not (out / "claims.json").exists()  # nothing measured, no report


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_config_with_more_layers_than_the_weights(claims, tmp_path):
    path = edited_copy(tmp_path, "names-2l", config={"n_layer": 3})
    result, out = claims(names_file(), "--checkpoint", str(path))
    assert_bad_input(result, out, "config.json asks for", "transformer.h.2.", "that the weights lack",
                     "make config.json describe the saved model", lines=1)


def test_a_missing_tensor(claims, tmp_path):
    path = edited_copy(tmp_path, "names-2l", drop="transformer.h.1.mlp.c_fc.weight")
    result, out = claims(names_file(), "--checkpoint", str(path))
    assert_bad_input(result, out, "1 tensor(s) (transformer.h.1.mlp.c_fc.weight) that the weights lack")


def test_invalid_tokenizer_json_names_the_file(claims, tmp_path):
    path = edited_copy(tmp_path, "names-2l", tokenizer_json="{ not json")
    result, out = claims(names_file(), "--checkpoint", str(path))
    assert_bad_input(result, out, f"{path / 'tokenizer.json'} is not valid JSON", "tokenizer.save_pretrained")


def test_base_and_tuned_of_different_shapes(claims):
    result, out = claims(pair_file(), "--checkpoint", "base=zoo:review-lm", "--checkpoint", "tuned=zoo:names-2l")
    assert_bad_input(result, out, "base and tuned are not twins", "n_layers: 2 vs 6", lines=1)


def test_a_mistyped_relative_path_is_an_error_not_a_skip(claims, pytester):
    (pytester.path / "runs").mkdir()
    result, out = claims(names_file(), "--checkpoint", "runs/names-2ll")
    assert_bad_input(result, out, "checkpoint model = 'runs/names-2ll'", "there is no directory")


def test_a_checkpoint_error_is_said_once_not_per_claim(claims, tmp_path):
    path = edited_copy(tmp_path, "names-2l", config={"n_layer": 3})
    two_claims = names_file() + "[subjects.mine.claims.IND-04]\n"
    result, out = claims(two_claims, "--checkpoint", str(path))
    assert_bad_input(result, out, "that the weights lack", lines=1)


# ---------------------------------------------------------------------------------------------
# Prompts and answers


def test_a_prompt_longer_than_the_context(claims):
    long = " ".join(["Her name was Alex Hart ."] * 12) + " Tomorrow at lunch time Alex"
    result, out = claims(names_file(prompt=long), *NAMES_MODEL)
    assert_bad_input(result, out, "prompt is 78 tokens, longer than the model's context of 64", "shorten it")


def test_a_word_outside_the_vocabulary(claims):
    result, out = claims(names_file(prompt=NAMES.replace("Hart", "Zorblax")), *NAMES_MODEL)
    assert_bad_input(result, out, "prompt has word(s) the vocabulary lacks ('Zorblax')")


def test_an_empty_prompt(claims):
    result, out = claims(names_file(prompt=""), *NAMES_MODEL)
    assert_bad_input(result, out, "prompt is '': an empty prompt measures nothing")


def test_identical_answers(claims):
    result, out = claims(pair_file(answers='[" bad", " bad"]'), *PAIR)
    assert_bad_input(result, out, "the answers are the same token", "give distinct answers", lines=1)


def test_an_answer_of_several_tokens(claims):
    result, out = claims(names_file(answer=" Hart Hart"), *NAMES_MODEL)
    assert_bad_input(result, out, "answer: answer ' Hart Hart' is 2 tokens, not one")


# ---------------------------------------------------------------------------------------------
# Parameters


@pytest.mark.parametrize("extra, fragment", [
    ('layer = "0"\nmax_corrupt_rank = 3\nmin_clean_rank = 10\npositions = { first_name = 4, last_name = 5, final = 11 }',
     "parameter 'layer' is '0' (str); it takes int"),
    (IND_02.format(last=-1), "positions.last_name is -1; the prompt has positions 0..11 (BOS counts as position 0)"),
    (IND_02.format(last=99), "positions.last_name is 99; the prompt has positions 0..11"),
    (IND_02.format(last='"Alex"'), "positions.last_name is 'Alex', which occurs 2 times in the prompt (positions [4, 11])"),
    (IND_02.format(last='"Smith"'), "positions.last_name is 'Smith', a token the prompt does not hold"),
    ('max_corrupt_rank = 3\nmin_clean_rank = 10\npositions = { first_name = 4, last_name = 5, final = 11 }',
     "parameter 'layer' (the block whose resid_post is patched at the last-name position) is required"),
    (IND_02.format(last=5).replace("layer = 0", "layer = 7"), "layer is 7; the model has layers 0..1"),
])
def test_parameters_that_do_not_fit_the_model(claims, extra, fragment):
    result, out = claims(names_file(claim="IND-02", extra=extra), *NAMES_MODEL)
    assert result.ret == BAD_INPUT, result.stdout.str()[-2000:]
    assert fragment in result.stdout.str() + result.stderr.str()
    assert not (out / "claims.json").exists()


@pytest.mark.parametrize("head, fragment", [
    ('"3.-1"', "head is '3.-1'; a head is written 'layer.head'"),
    ('"10.4"', "head is '10.4'; the model has layers 0..5 and heads 0..7"),
    ('"3.9"', "head is '3.9'; the model has layers 0..5 and heads 0..7"),
])
def test_heads_the_model_does_not_have(claims, head, fragment):
    result, out = claims(pair_file(claim="RLHF-07", extra=f"head = {head}"), *PAIR)
    assert_bad_input(result, out, fragment, lines=1)


def test_positions_given_by_token_mean_the_same_with_and_without_bos(claims):
    """Integer positions count BOS where the model prepends one; a token names the same place either way."""
    extra = IND_02.format(last='"Hart"').replace("first_name = 4", 'first_name = "Alex#1"').replace("final = 11", 'final = "Alex#2"')
    resolved = {}
    for ref in ("zoo:tiny-gpt2", "zoo:tiny-gpt2-nobos"):
        result, out = claims(names_file(claim="IND-02", extra=extra), "--checkpoint", ref)
        assert result.ret in (0, 1), result.stdout.str()[-2000:]
        (row,) = json.loads((out / "claims.json").read_text())["results"]
        resolved[ref] = row["params"]["positions"]
    assert resolved["zoo:tiny-gpt2"] == {"first_name": 4, "last_name": 5, "final": 11}
    assert resolved["zoo:tiny-gpt2-nobos"] == {"first_name": 3, "last_name": 4, "final": 10}


def test_a_pair_claim_without_its_pair(claims):
    result, out = claims(pair_file(), "--checkpoint", "zoo:review-lm")
    assert_bad_input(result, out, "claim RLHF-01 needs a 'base' checkpoint", "pass --checkpoint base=DIR")


def test_a_layer_range_outside_the_model(claims):
    extra = "layer_range = [1, 5]\npositions = { first_name = 4, last_name = 5, final = 11 }"
    result, out = claims(names_file(claim="IND-03", extra=extra), *NAMES_MODEL)
    assert_bad_input(result, out, "layer_range[1] is 5; the model has layers 0..1", lines=1)


def test_a_position_given_as_a_token_the_prompt_lacks(claims):
    result, out = claims(pair_file(claim="RLHF-06", extra='position = "terrible"'), *PAIR)
    assert_bad_input(result, out, "position is 'terrible', a token the prompt does not hold", lines=1)


# ---------------------------------------------------------------------------------------------
# Options and subject files


@pytest.mark.parametrize("args, fragment", [
    (("--device", "gpu"), "--device 'gpu' is not a torch device; use cpu, cuda or cuda:N"),
    (("--threads", "0"), "--threads 0: give at least 1"),
    pytest.param(("--device", "cuda"), "this machine has no CUDA device; use --device cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
])
def test_options_that_cannot_work(claims, args, fragment):
    result, _ = claims(names_file(), *NAMES_MODEL, *args)
    assert result.ret == BAD_INPUT
    assert fragment in result.stderr.str() and "Traceback" not in result.stderr.str()


def test_a_subject_file_that_registers_no_claim(claims):
    result, _ = claims('[subjects.mine]\n[subjects.mine.params]\nprompt = "Her name was"\n', *NAMES_MODEL)
    assert result.ret == BAD_INPUT
    assert "subject 'mine' registers no claim, so nothing would run" in result.stderr.str()


def test_a_marker_selection_counts_only_what_it_selects(claims):
    result, _ = claims(names_file(), *NAMES_MODEL, "-m", "IND_01")
    assert result.ret == 0 and "not registered on any selected subject" not in result.stdout.str()


def test_no_claim_collected(claims):
    result, _ = claims(names_file(), *NAMES_MODEL, "-m", "RLHF_01")
    assert result.ret == NO_CLAIM


# ---------------------------------------------------------------------------------------------
# Findings, as they read


def test_an_adhoc_run_collects_only_the_claims_it_registers(claims):
    result, out = claims(names_file(), *NAMES_MODEL)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*collected * / * deselected / 1 selected*",
                                 "35 claim(s) not registered on any selected subject, not run (pytest --list-claims lists them)"])
    assert "SKIPPED" not in result.stdout.str()
    (row,) = json.loads((out / "claims.json").read_text())["results"]
    assert (row["claim"], row["verdict"]) == ("IND-01", "holds")
    assert row["params"]["prompt"] == NAMES and row["params"]["answer"] == " Hart"
    subject = json.loads((out / "claims.json").read_text())["provenance"]["subjects"]["mine"]
    assert len(subject["subject_file_sha256"]) == 64


def test_a_refuted_claim_reads_as_one_line(claims):
    result, out = claims(names_file(), "--checkpoint", "zoo:names-2l-untrained")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["IND-01 on mine: refuted: answer_rank = *, needs <= 1"])
    text = result.stdout.str()
    assert "Traceback" not in text and "def test_" not in text and "\\x89PNG" not in text
    (row,) = json.loads((out / "claims.json").read_text())["results"]
    assert row["verdict"] == "refuted"


def test_the_report_is_strict_json(tmp_path):
    r = ClaimRecord(claim="RLHF-01", subject="family", verdict="refuted")
    r.measure(family_fraction=float("nan"), values=[1.0, float("inf")])
    paths = report_mod.write_report([r], {"versions": {}, "checkpoints": {}}, tmp_path)

    def refuse(constant):
        raise ValueError(f"{constant} in claims.json")

    (row,) = json.loads(paths["claims.json"].read_text(), parse_constant=refuse)["results"]
    assert row["measured"] == {"family_fraction": None, "values": [1.0, None]}


INTERRUPTING = '''
from fixtures.catalogue import Paper, claim

PAPER = Paper("demo", "A demo paper", "seed002")


@claim("DEMO-01", statement="a claim that is interrupted", shown="nowhere", rule="never reaches a verdict")
def test_interrupted(subject, params, model, record):
    record.measure(n_layers=model.cfg.n_layers)
    raise KeyboardInterrupt
'''


def test_an_interrupted_run_leaves_the_previous_report_whole(pytester, tmp_path, monkeypatch):
    from fixtures import catalogue

    monkeypatch.setattr(catalogue, "DECLARED", dict(catalogue.DECLARED))
    ckpt = copy_checkpoint("tiny-gpt2", tmp_path / "ckpt")
    pytester.makepyfile(test_claims=INTERRUPTING)
    pytester.makeconftest('pytest_plugins = ["fixtures.models", "fixtures.plugin"]\nimport test_claims  # noqa\n')
    pytester.makefile(".toml", subjects=f'[subjects.s]\ncheckpoints = {{ model = "{ckpt}" }}\n[subjects.s.claims.DEMO-01]\n')
    out = pytester.path / "out"
    out.mkdir()
    (out / "claims.json").write_text('{"provenance": {"run": "previous"}, "results": []}')
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--report-dir", str(out), "--subject-file", "subjects.toml",
                                          no_reraise_ctrlc=True)  # the interruption is the inner run's alone
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert json.loads((out / "claims.json").read_text())["provenance"] == {"run": "previous"}
    result.stdout.fnmatch_lines(["*run interrupted: the claim report was not written; the previous one is whole*"])
    shutil.rmtree(out)


def test_a_subject_family_replaces_the_built_in_one_and_an_unusable_one_is_said(claims):
    rows = '[{ prompt = "This movie was really", answers = [" bad", " good"] }, { prompt = "The film was quite", answers = [" bad", " good"] }]'
    result, out = claims(pair_file(extra=f"family = {rows}"), *PAIR)
    assert result.ret == 0
    (row,) = json.loads((out / "claims.json").read_text())["results"]
    assert row["measured"]["family"] == {"source": "the subject's", "prompts": 2, "left_out": 0, "left_out_because": {}}
    assert "family_tuned_minus_base_ci95_low" in row["checks"]
    unusable = '{ templates = ["This Zanzibar was really"], answers = [[" bad", " good"]] }'
    result, out = claims(pair_file(extra=f"family = {unusable}"), *PAIR)
    assert result.ret == 0  # the canonical prompt's checks stand alone
    (row,) = json.loads((out / "claims.json").read_text())["results"]
    assert row["measured"]["family_checks"].startswith("not run: 0 of 1 prompts of the subject's review family")
    assert "family_tuned_minus_base_ci95_low" not in row["checks"] and row["verdict"] == "holds"


def test_names_a_vocabulary_lacks_leave_the_family_out_not_the_claim(claims):
    extra = ('supporting_heads = ["0.0", "0.2", "0.5", "1.3", "1.4", "1.5", "1.6", "1.7"]\ninduction_head = "1.0"\n'
             'positions = { first_name = 4, last_name = 5, final = 11 }\n'
             'family_names = { first = ["Zanzibar", "Alex"], last = ["Qwerty"] }')
    result, out = claims(names_file(claim="IND-06", extra=extra), *NAMES_MODEL)
    assert result.ret == 0, result.stdout.str()[-1500:]
    (row,) = json.loads((out / "claims.json").read_text())["results"]
    assert row["verdict"] == "holds" and "family_top_head" not in row["measured"]
    assert row["measured"]["family_checks"].startswith("not run: 1 first and 0 last names of the subject's `family_names`")
