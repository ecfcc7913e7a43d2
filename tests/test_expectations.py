"""Registered refutations: the verdict follows the check that failed, and the figures come from the run."""
import json

import pytest

from fixtures import catalogue

CLAIM_TESTS = '''
import pytest

from fixtures.catalogue import Paper, Param, claim

PAPER = Paper("demo", "A demo paper", "seed002")


@pytest.fixture
def broken_input(params):
    if params["setup_error"] is not None:
        pytest.fail(params["setup_error"], pytrace=False)


@claim("DEMO-01", statement="two checks", shown="nowhere", rule="holds when both checks meet their thresholds", params={
    "setup_error": Param("a setup failure to raise", None, type=str),
    "crash": Param("an exception to raise in the test", None, type=str),
    "bare_assert": Param("a value for a bare assert", None, type=int),
    "shown": Param("a value shown, not compared", 0),
    "first": Param("the first check's value", 0.0),
    "second": Param("the second check's value", 0.0),
})
def test_two_checks(subject, params, broken_input, record):
    if params["crash"] is not None:
        raise ValueError(params["crash"])
    if params["bare_assert"] is not None:
        assert params["bare_assert"] > 1, "a helper's own sanity check"
    record.measure(shown=params["shown"])
    record.expect("first", params["first"], ">=", 1.0)
    record.expect("second", params["second"], ">=", 1.0)
'''
DEMO_CONFTEST = 'pytest_plugins = ["fixtures.models", "fixtures.plugin"]\nimport test_claims  # noqa: E402,F401  declares the demo claim before the subject files are read\n'

REFUTED = 'expect = "refuted"\nfails = ["second"]\nreason = "the second check cannot hold on this subject"\n'


def subjects(**entries: str) -> str:
    """A subject file: one subject per entry, whose DEMO-01 table is the entry's text."""
    return "".join(f"[subjects.{name}]\n[subjects.{name}.claims.DEMO-01]\n{text}\n" for name, text in entries.items())


@pytest.fixture
def run_claims(pytester, monkeypatch):
    monkeypatch.setattr(catalogue, "DECLARED", dict(catalogue.DECLARED))  # the demo claim stays here
    pytester.makepyfile(test_claims=CLAIM_TESTS)
    pytester.makeconftest(DEMO_CONFTEST)

    def run(**entries: str):
        pytester.makefile(".toml", subjects=subjects(**entries))
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--report-dir", str(pytester.path / "out"),
                                              "--subject-file", "subjects.toml")
        doc = json.loads((pytester.path / "out" / "claims.json").read_text())
        return result, {r["subject"]: r for r in doc["results"]}

    return run


def test_named_check_failing_is_expected_refuted_with_the_runs_figure(run_claims):
    result, rows = run_claims(known=f"first = 2.0\nsecond = 0.25\n{REFUTED}")
    result.assert_outcomes(xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    row = rows["known"]
    assert row["verdict"] == "expected-refuted"
    assert row["reason"] == "the second check cannot hold on this subject (measured: second = 0.25, needs >= 1)"


def test_refutation_that_no_longer_reproduces_is_a_regression_and_fails_the_run(run_claims):
    result, rows = run_claims(fixed=f"first = 2.0\nsecond = 3.5\nshown = 7\n{REFUTED}")
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    row = rows["fixed"]
    assert row["verdict"] == "regression"
    assert row["reason"] == "registered as refuted by second, but every check held (second = 3.5, needs >= 1)"
    assert row["measured"] == {"shown": 7, "first": 2.0, "second": 3.5}
    assert row["threshold"] == {"first": ">= 1", "second": ">= 1"}
    result.stdout.fnmatch_lines(["DEMO-01 on fixed: regression: registered as refuted by second, but every check held*",
                                 "*regression: DEMO-01 on fixed*", "*claim report (1 regression)*"])


def test_another_check_failing_is_a_regression(run_claims):
    result, rows = run_claims(moved=f"first = 0.5\nsecond = 0.25\n{REFUTED}")
    result.assert_outcomes(failed=1)
    row = rows["moved"]
    assert row["verdict"] == "regression"
    assert row["reason"] == "expected second to fail, but first failed (first = 0.5, needs >= 1)"
    assert row["checks"] == {"first": "fail", "second": "fail"}
    result.stdout.fnmatch_lines(["DEMO-01 on moved: regression: expected second to fail, but first failed*"])


def test_every_check_is_measured_after_one_fails(run_claims):
    """The first failed check does not hide the rest: both are measured and both fail the claim."""
    result, rows = run_claims(both="first = 0.5\nsecond = 0.25\n")
    row = rows["both"]
    assert row["verdict"] == "refuted" and row["measured"] == {"shown": 0, "first": 0.5, "second": 0.25}
    assert row["reason"] == "first = 0.5, needs >= 1; second = 0.25, needs >= 1"
    result.stdout.fnmatch_lines(["DEMO-01 on both: refuted: first = 0.5, needs >= 1",
                                 "DEMO-01 on both: refuted: second = 0.25, needs >= 1"])


def test_a_name_that_is_no_check_of_the_claim_is_said(run_claims):
    refuted = REFUTED.replace('["second"]', '["secnod"]')
    result, rows = run_claims(typo=f"first = 2.0\nsecond = 3.0\n{refuted}")
    result.assert_outcomes(failed=1)
    assert rows["typo"]["reason"] == ("registered as refuted by secnod, but every check held "
                                      "(no check of this claim is named secnod)")


@pytest.mark.parametrize("entry, cause", [
    ('crash = "no such layer"', "ValueError: no such layer"),
    ("bare_assert = 0", "AssertionError: a helper's own sanity check"),
    ('setup_error = "subject x: model.safetensors is truncated"', "subject x: model.safetensors is truncated"),
])
def test_an_exception_other_than_a_failed_check_is_an_error_not_a_refutation(run_claims, entry, cause):
    result, rows = run_claims(registered=f"first = 0.5\nsecond = 0.25\n{entry}\n{REFUTED}",
                              unregistered=f"first = 0.5\nsecond = 0.25\n{entry}\n")
    assert result.ret == 6  # a measurement that broke off: neither a finding nor a failed test
    assert result.parseoutcomes().get("xfailed", 0) == 0
    for row in rows.values():
        assert row["verdict"] == "error" and row["reason"] == cause


def test_unregistered_outcomes_keep_their_verdicts(run_claims):
    result, rows = run_claims(good="first = 2.0\nsecond = 2.0\n", bad="first = 2.0\nsecond = 0.5\n")
    result.assert_outcomes(passed=1, failed=1)
    assert rows["good"]["verdict"] == "holds" and rows["good"]["reason"] == ""
    assert rows["bad"]["verdict"] == "refuted"
    assert rows["bad"]["reason"] == "second = 0.5, needs >= 1"
    assert rows["bad"]["checks"] == {"first": "pass", "second": "fail"}
