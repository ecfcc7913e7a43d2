"""Comparing two claim reports row by row."""
import json

from fixtures import verdicts


def write(path, rows):
    path.write_text(json.dumps({"results": [{"claim": c, "subject": s, "verdict": v} for c, s, v in rows]}))
    return path


def test_identical_reports_agree(tmp_path):
    rows = [("RLHF-01", "review-pair", "holds"), ("IND-07", "names-2l", "expected-refuted")]
    a, b = write(tmp_path / "a.json", rows), write(tmp_path / "b.json", rows)
    assert verdicts.main([str(a), str(b)]) == 0


def test_a_changed_or_vanished_row_is_a_difference(tmp_path, capsys):
    a = write(tmp_path / "a.json", [("RLHF-01", "p", "holds"), ("RLHF-07", "p", "holds")])
    b = write(tmp_path / "b.json", [("RLHF-01", "p", "refuted"), ("RLHF-08", "p", "holds")])
    assert verdicts.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "RLHF-01 on p: holds -> refuted" in out
    assert "RLHF-07 on p: holds -> absent" in out and "RLHF-08 on p: absent -> holds" in out


def test_a_missing_report_is_an_error_not_agreement(tmp_path, capsys):
    a = write(tmp_path / "a.json", [("RLHF-01", "p", "holds")])
    assert verdicts.main([str(a), str(tmp_path / "missing.json")]) == 2
    assert "did not finish" in capsys.readouterr().err
