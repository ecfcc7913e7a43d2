"""The claims plugin end to end (ad-hoc subjects, verdicts, skips) and the atomic report writer."""
import json
import os
import pickle

import pytest
import transformer_lens.model_bridge  # noqa: F401  imported once: pytester's in-process runs re-import new modules

from fixtures import catalogue
from fixtures import report as report_mod
from fixtures.records import VERDICTS, ClaimRecord
from tests.conftest import copy_checkpoint

CLAIM_TESTS = '''
from fixtures.catalogue import Paper, Param, claim

PAPER = Paper("demo", "A demo paper", "seed002")


@claim("DEMO-01", statement="the model is deep enough", shown="a demo figure: 12 layers", rule="holds when n_layers >= min_layers",
       params={"min_layers": Param("the fewest layers that hold", 1)})
def test_layers(subject, params, model, record):
    record.expect("n_layers", model.cfg.n_layers, ">=", params["min_layers"])


@claim("DEMO-02", statement="the pair shares a width", shown="nowhere", rule="holds when d_model is equal")
def test_pair(subject, params, base_model, tuned_model, record):
    record.measure(d_model=base_model.cfg.d_model)
    record.expect("same_width", base_model.cfg.d_model == tuned_model.cfg.d_model, "==", True)
'''
DEMO_CONFTEST = 'pytest_plugins = ["fixtures.models", "fixtures.plugin"]\nimport test_claims  # noqa: E402,F401  declares the demo claims before the subject files are read\n'

SUBJECTS = '''
[subjects.deep-enough]
checkpoints = {{ model = "{ckpt}" }}
[subjects.deep-enough.claims.DEMO-01]
min_layers = 2
published = {{ n_layers = 12 }}

[subjects.too-shallow]
checkpoints = {{ model = "{ckpt}" }}
[subjects.too-shallow.claims.DEMO-01]
min_layers = 5

[subjects.known-shallow]
checkpoints = {{ model = "{ckpt}" }}
[subjects.known-shallow.claims.DEMO-01]
min_layers = 5
expect = "refuted"
fails = ["n_layers"]
reason = "a three-layer model"

[subjects.offline-pair]
origin = "hub"
checkpoints = {{ base = "nobody/base-model", tuned = "nobody/tuned-model" }}
[subjects.offline-pair.claims.DEMO-02]

[subjects.closed-model]
origin = "hub"
unavailable = "the weights were never released"
checkpoints = {{ model = "nobody/closed" }}
[subjects.closed-model.claims.DEMO-01]
'''


@pytest.fixture
def claims_project(pytester, tmp_path, monkeypatch):
    monkeypatch.setattr(catalogue, "DECLARED", dict(catalogue.DECLARED))  # the demo claims stay here
    from lib import loading

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loading.hub_reachable.cache_clear()
    ckpt = copy_checkpoint("tiny-gpt2", tmp_path / "ckpt")
    pytester.makepyfile(test_claims=CLAIM_TESTS)
    pytester.makeconftest(DEMO_CONFTEST)
    pytester.makefile(".toml", subjects=SUBJECTS.format(ckpt=ckpt))
    yield pytester, ckpt
    loading.hub_reachable.cache_clear()


def run(pytester, *args):
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "--report-dir", str(pytester.path / "out"), *args)


def test_verdicts_skips_and_report(claims_project):
    pytester, ckpt = claims_project
    result = run(pytester, "--subject-file", "subjects.toml")
    result.assert_outcomes(passed=1, failed=1, xfailed=1, skipped=2)
    result.stdout.fnmatch_lines(["DEMO-01 on too-shallow: refuted: n_layers = 3, needs >= 5"])
    doc = json.loads((pytester.path / "out" / "claims.json").read_text())
    rows = {(r["claim"], r["subject"]): r for r in doc["results"]}
    assert rows[("DEMO-01", "deep-enough")]["verdict"] == "holds"
    assert rows[("DEMO-01", "deep-enough")]["measured"] == {"n_layers": 3}
    assert rows[("DEMO-01", "deep-enough")]["threshold"] == {"n_layers": ">= 2"}
    assert rows[("DEMO-01", "deep-enough")]["published"] == {"n_layers": 12}
    assert rows[("DEMO-01", "too-shallow")]["verdict"] == "refuted"
    assert rows[("DEMO-01", "too-shallow")]["reason"] == "n_layers = 3, needs >= 5"
    known = rows[("DEMO-01", "known-shallow")]
    assert known["verdict"] == "expected-refuted"
    assert known["reason"] == "a three-layer model (measured: n_layers = 3, needs >= 5)"
    offline = rows[("DEMO-02", "offline-pair")]
    assert offline["verdict"] == "not-run"
    assert "nobody/base-model" in offline["reason"] and "\n" not in offline["reason"]
    closed = rows[("DEMO-01", "closed-model")]
    assert closed["verdict"] == "not-run" and closed["reason"] == "subject closed-model: the weights were never released"
    prov = doc["provenance"]
    assert set(prov["versions"]) >= {"torch", "transformers", "transformer-lens", "trl"}
    (entry,) = prov["checkpoints"].values()
    assert len(entry["weights_sha256"]) == 64 and entry["prepend_bos"] is True
    assert "git_commit" in prov
    for name in ("claims.md", "claims.html"):
        assert "deep-enough" in (pytester.path / "out" / name).read_text()


def test_adhoc_checkpoint_overrides_the_file(claims_project):
    pytester, ckpt = claims_project
    pytester.makefile(".toml", one="[subjects.mine.claims.DEMO-01]\nmin_layers = 1\n")
    result = run(pytester, "--checkpoint", str(ckpt), "--subject-file", "one.toml", "-m", "DEMO_01")
    result.assert_outcomes(passed=1, deselected=1)


def test_markers_select_claims(claims_project):
    pytester, _ = claims_project
    result = run(pytester, "--subject-file", "subjects.toml", "-m", "DEMO_02")
    result.assert_outcomes(skipped=1, deselected=4)


def test_checkpoint_without_subject_file_is_a_usage_error(claims_project):
    pytester, ckpt = claims_project
    result = run(pytester, str(pytester.path), "--checkpoint", str(ckpt))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--checkpoint needs --subject-file*"])


def test_corrupt_checkpoint_fails_with_one_line(claims_project):
    pytester, ckpt = claims_project
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = run(pytester, "--subject-file", "subjects.toml", "-m", "DEMO_01", "-k", "deep")
    assert result.ret == 4  # found before anything ran: no verdict, no report
    result.stdout.fnmatch_lines(["bad input: subjects.toml, subject deep-enough, checkpoint model = *"
                                 "model.safetensors is truncated*"])
    assert "Traceback" not in result.stdout.str() and not (pytester.path / "out" / "claims.json").exists()


def _records(n: int = 2) -> list[ClaimRecord]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = []
    for i in range(n):
        r = ClaimRecord(claim="IND-04", subject=f"s{i}", verdict="holds")
        r.measure(x=float(i))
        fig, ax = plt.subplots()
        ax.plot([0, i])
        r.figure(f"figure {i}", fig)
        recs.append(r)
    return recs


def test_report_embeds_figures_and_links_them(tmp_path):
    paths = report_mod.write_report(_records(), {"versions": {}, "checkpoints": {}}, tmp_path)
    html = paths["claims.html"].read_text()
    assert html.count("data:image/png;base64,") == 2
    md = paths["claims.md"].read_text()
    assert md.count("](figures/") == 2
    assert len(list((tmp_path / "figures").glob("*.png"))) == 2


def test_shown_lists_where_each_claim_held_and_was_refuted(tmp_path):
    def rec(claim, subject, verdict):
        r = ClaimRecord(claim=claim, subject=subject)
        r.verdict = verdict
        return r

    records = [rec("A-01", "pos", "holds"), rec("A-01", "neg", "expected-refuted"), rec("A-01", "user", "refuted"),
               rec("B-01", "pos", "holds"), rec("B-01", "neg", "regression"), rec("C-01", "x", "not-run")]
    t = report_mod.shown(records)
    assert t.rows == [["A-01", "pos", "neg, user"], ["B-01", "pos", "—"]]
    assert t.title.startswith("Shown to pass and to fail: 1 of 2 claims")
    paper = catalogue.Paper("demo", "A demo paper", "seed002")
    why = {"B-01": catalogue.Claim("B-01", paper, "", "", no_subject_refuted="no negative: tried x, measured y"),
           "C-01": catalogue.Claim("C-01", paper, "", "", no_subject_holds="no subject", no_subject_refuted="none")}
    assert report_mod.shown(records, why).rows[1:] == [["B-01", "pos", "— (no negative: tried x, measured y)"],
                                                      ["C-01", "— (no subject)", "— (none)"]]
    paths = report_mod.write_report(records, {"versions": {}, "checkpoints": {}}, tmp_path)
    assert "| A-01 | pos | neg, user |" in paths["claims.md"].read_text()
    assert "Shown to pass and to fail" in paths["claims.html"].read_text()


def test_interrupted_write_leaves_the_previous_report_whole(tmp_path, monkeypatch):
    report_mod.write_report(_records(1), {"run": "first"}, tmp_path)
    before = {n: (tmp_path / n).read_bytes() for n in ("claims.json", "claims.md", "claims.html")}
    real_replace = os.replace

    def crash_on_report_files(src, dst):
        if str(dst).endswith(("claims.json", "claims.md", "claims.html")):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(report_mod.os, "replace", crash_on_report_files)
    with pytest.raises(KeyboardInterrupt):
        report_mod.write_report(_records(2), {"run": "second"}, tmp_path)
    after = {n: (tmp_path / n).read_bytes() for n in before}
    assert after == before
    assert json.loads(after["claims.json"])["provenance"] == {"run": "first"}


def test_expect_records_value_threshold_and_outcome():
    r = ClaimRecord(claim="RLHF-01", subject="pair")
    assert r.expect("tuned_logit_diff", 2.5, ">", 1.0)
    assert not r.expect("base_logit_diff", -3.0, ">", -1.0)  # recorded, and the claim goes on
    (failed,) = r.failures
    assert str(failed) == "RLHF-01 on pair: base_logit_diff = -3, the claim needs > -1"
    assert isinstance(failed, AssertionError)
    assert (failed.check, failed.value, failed.op, failed.threshold) == ("base_logit_diff", -3.0, ">", -1.0)
    assert failed.measured == "base_logit_diff = -3, needs > -1"
    copy = pickle.loads(pickle.dumps(failed))
    assert (copy.check, str(copy)) == ("base_logit_diff", str(failed))
    assert r.threshold == {"tuned_logit_diff": "> 1", "base_logit_diff": "> -1"}
    assert not r.expect("nan", float("nan"), "!=", 0.0)
    assert r.checks == {"tuned_logit_diff": "pass", "base_logit_diff": "fail", "nan": "fail"}


def test_hub_subject_runs_from_a_local_hub_cache(claims_project, tmp_path):
    pytester, ckpt = claims_project
    from tests.conftest import hub_layout

    hub_layout(ckpt, tmp_path / "empty_hf_home", "someone/tiny-gpt2")
    pytester.makefile(".toml", hub='[subjects.cached]\norigin = "hub"\ncheckpoints = { model = "someone/tiny-gpt2" }\n'
                                   '[subjects.cached.claims.DEMO-01]\nmin_layers = 1\n')
    result = run(pytester, "--subject-file", "hub.toml", "-m", "DEMO_01")
    result.assert_outcomes(passed=1, deselected=1)
    doc = json.loads((pytester.path / "out" / "claims.json").read_text())
    assert doc["provenance"]["checkpoints"]["someone/tiny-gpt2"]["source"] == "hub"


def test_tables_appear_in_all_three_reports(tmp_path):
    r = ClaimRecord(claim="LFP-03", subject="pair", verdict="holds")
    r.table("Table 2: predicted vs true valence", ["token", "VADER", "probe"], [[" great", 3.1, 2.4], ["a|b", -1.5, -0.9]])
    with pytest.raises(ValueError, match="row 0 has 2 cells for 3 columns"):
        r.table("bad", ["a", "b", "c"], [[1, 2]])
    paths = report_mod.write_report([r], {"versions": {}, "checkpoints": {}}, tmp_path)
    md = paths["claims.md"].read_text()
    assert "**Table 2: predicted vs true valence**" in md and "|  great | 3.1 | 2.4 |" in md and "a\\|b" in md
    assert "<th>VADER</th>" in paths["claims.html"].read_text()
    (table,) = json.loads(paths["claims.json"].read_text())["results"][0]["tables"]
    assert table["rows"][1] == ["a|b", -1.5, -0.9]


def test_regressions_and_errors_stand_out_in_every_report(tmp_path):
    assert set(report_mod.VERDICT_ORDER) == set(VERDICTS) == set(report_mod.VERDICT_COLOUR)
    rows = [ClaimRecord(claim="LFP-01", subject="pair", verdict="regression",
                        reason="registered as refuted by top_share, but every check held (top_share = 0.67, needs > 0.5)"),
            ClaimRecord(claim="IND-04", subject="broken", verdict="error", reason="ValueError: no such layer"),
            ClaimRecord(claim="IND-04", subject="fine", verdict="holds")]
    rows[0].measure(top_share=0.67)
    paths = report_mod.write_report(rows, {"versions": {}, "checkpoints": {}}, tmp_path)
    md = paths["claims.md"].read_text()
    assert "1 regression · 1 error · 0 refuted · 1 holds" in md
    assert "| LFP-01 | pair | **⚠ REGRESSION** | top_share = 0.67 |" in md
    assert "**⚠ ERROR**" in md and "**holds**" in md
    html = paths["claims.html"].read_text()
    assert html.count(report_mod.ALARM_STYLE["regression"]) == 3  # the summary count, the overview's chip, the row's
    assert html.count(report_mod.ALARM_STYLE["error"]) == 3
    doc = json.loads(paths["claims.json"].read_text())
    assert [r["verdict"] for r in doc["results"]] == ["error", "holds", "regression"]


def test_zoo_rebuild_table_appears_in_the_reports(tmp_path):
    rebuild = {"created": "2026-01-01T00:00:00+00:00", "machine": {"processor": "x86_64", "cpu_capability": "DEFAULT"},
               "models": [{"model": "review-lm", "metric": "logit_diff", "shipped": -0.061, "rebuilt": -0.058,
                           "weight_files": 1, "identical_weight_files": 0}],
               "verdicts": [{"claim": "RLHF-07", "subject": "review-pair", "verdict": "regression", "reproduced": False},
                            {"claim": "RLHF-01", "subject": "review-pair", "verdict": "holds", "reproduced": True}]}
    paths = report_mod.write_report(_records(1), {"versions": {}, "checkpoints": {}, "zoo_rebuild": rebuild}, tmp_path)
    md, page = paths["claims.md"].read_text(), paths["claims.html"].read_text()
    for text in (md, page):
        assert "Zoo rebuilt from its recipes" in text and "kernels DEFAULT" in text
        assert "1 of 2 reproduced" in text and "0/1" in text


def test_a_run_against_an_accepted_baseline_fails_on_any_changed_verdict(claims_project):
    pytester, ckpt = claims_project
    accepted = pytester.path / "accepted" / "claims.json"
    selection = ("--subject-file", "subjects.toml", "-m", "DEMO_01", "--baseline", str(accepted))
    first = run(pytester, *selection, "--accept")
    assert first.ret == 0 and accepted.is_file()  # too-shallow is refuted: a finding, accepted as it is
    first.stdout.fnmatch_lines(["accepted: this run's 4 verdicts are the baseline now*"])
    same = run(pytester, *selection)
    assert same.ret == 0  # the same refutation: nothing changed
    same.stdout.fnmatch_lines(["every one of 4 verdicts is the accepted run's*"])
    doc = json.loads(accepted.read_text())
    for row in doc["results"]:
        if row["subject"] == "deep-enough":
            row["verdict"] = "refuted"
    doc["results"].append({"claim": "DEMO-09", "subject": "gone", "verdict": "holds"})
    accepted.write_text(json.dumps(doc))
    changed = run(pytester, *selection)
    assert changed.ret == 1
    changed.stdout.fnmatch_lines(["  changed: DEMO-01 on deep-enough: refuted -> holds",
                                  "  changed: DEMO-09 on gone: holds -> absent",
                                  "2 verdict(s) differ from the accepted run*"])


def test_a_changed_verdict_fails_a_run_that_otherwise_passes(claims_project):
    pytester, ckpt = claims_project
    accepted = pytester.path / "accepted.json"
    only = ("--subject-file", "subjects.toml", "-m", "DEMO_01", "-k", "deep", "--baseline", str(accepted))
    assert run(pytester, *only, "--accept").ret == 0
    assert run(pytester, *only).ret == 0
    doc = json.loads(accepted.read_text())
    doc["results"][0]["verdict"] = "refuted"
    accepted.write_text(json.dumps(doc))
    assert run(pytester, *only).ret == 1


def test_a_missing_baseline_is_a_usage_error(claims_project):
    pytester, ckpt = claims_project
    result = run(pytester, "--subject-file", "subjects.toml", "--baseline", str(pytester.path / "none.json"))
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--baseline *none.json does not exist; write it with a run that passes --accept*"])


def test_junit_xml_has_a_case_per_claim_and_subject_with_its_measurements(claims_project):
    pytester, ckpt = claims_project
    xml = pytester.path / "junit.xml"
    run(pytester, "--subject-file", "subjects.toml", "-m", "DEMO_01", "--junitxml", str(xml))
    import xml.etree.ElementTree as ET

    cases = {c.get("name"): c for c in ET.parse(xml).getroot().iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_layers[deep-enough]"].iter("property")}
    assert props == {"verdict": "holds", "measured.n_layers": "3", "threshold.n_layers": ">= 2"}
    assert cases["test_layers[too-shallow]"].find("failure") is not None


def test_the_terminal_shows_the_verdict_matrix_then_the_report(claims_project):
    pytester, ckpt = claims_project
    result = run(pytester, "--subject-file", "subjects.toml")
    result.stdout.fnmatch_lines(["verdicts (H holds, R refuted, x expected-refuted, ! regression, E error, - not-run*",
                                 "             1 2 3 4 5",
                                 "DEMO-01      - H x . R",
                                 "DEMO-02      . . . - .",
                                 "subjects: 1 closed-model, 2 deep-enough, 3 known-shallow, 4 offline-pair, 5 too-shallow",
                                 "claim report (*): */out/claims.html"])


def test_published_numbers_are_redrawn_beside_the_measured_ones(tmp_path):
    r = ClaimRecord(claim="RLHF-01", subject="pair", verdict="holds", paper="RLHF + TransformerLens")
    r.published = {"base_logit_diff": -0.089, "tuned_logit_diff": 2.016, "note": "text"}
    r.measure(base_logit_diff=-0.061)
    page = report_mod.write_report([r], {"versions": {}, "checkpoints": {}}, tmp_path)["claims.html"].read_text()
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert svg.count("<rect") == 3  # two published figures, one of them measured here
    assert "published -0.089" in svg and "this run -0.061" in svg and "published 2.016" in svg
