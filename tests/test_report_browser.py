"""The HTML report in a real browser (Debian's headless Chromium): no console errors, the page fits 1280
px without horizontal scroll, every verdict chip's link lands on its row, and the filters hide what they
should. Skipped, saying why, where Chromium is not installed."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import matplotlib
import pytest

from fixtures import report as report_mod
from fixtures.records import ClaimRecord

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium)")
# Chromium in a closed network: no background connections, no sandbox as root
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def rows() -> list[ClaimRecord]:
    """Three papers, several subjects, every verdict, long values and reasons, a figure and a wide table."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for i, (claim, paper, subjects) in enumerate([
            ("RLHF-01", "RLHF + TransformerLens", ["review-pair", "review-pair-towards-good", "review-pair-unchanged",
                                                    "gpt2-imdb-pair-with-a-long-subject-name"]),
            ("RLHF-08", "RLHF + TransformerLens", ["review-pair", "review-pair-towards-good"]),
            ("IND-06", "Induction heads tutorial", ["names-2l", "names-2l-untrained"]),
            ("LFP-02", "Learned feedback patterns", ["review-dpo-pair"])]):
        for j, subject in enumerate(subjects):
            verdict = ["holds", "expected-refuted", "refuted", "regression", "error", "not-run"][(i + j) % 6]
            r = ClaimRecord(claim=claim, subject=subject, verdict=verdict, paper=paper, statement=f"{claim} states a finding",
                            source=f"{paper} (seed000); figure {i}", rule=f"Holds when `check_{i}` >= 0.5 " * 6,
                            reason="a reason that goes on " * 20 if verdict != "holds" else "")
            r.expect(f"check_{i}", 0.25 * j, ">=", 0.5)
            r.measure(long_list=list(range(200)), nested={"a": [1.5] * 30, "b": "x" * 300})
            r.params = {"prompt": "This movie was really", "heads": ["5.4", "5.5"]}
            r.published = {f"check_{i}": 0.9}
            fig, ax = plt.subplots(figsize=(9, 3))
            ax.plot(range(10))
            r.figure("a figure", fig)
            r.table("a wide table", [f"column {k}" for k in range(14)], [[k * 1.5 for k in range(14)]] * 3)
            out.append(r)
    return out


PROV = {"versions": {"torch": "2.13.0"}, "checkpoints": {"zoo:review-lm": {"weights_sha256": "ab" * 32}},
        "subjects": {"review-pair": {"origin": "zoo", "description": "a pair", "checkpoints": {"base": "zoo:review-lm"}}}}


@pytest.fixture
def page(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.errors = []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        yield page
        browser.close()


def test_the_report_in_a_browser(page, tmp_path):
    paths = report_mod.write_report(rows(), PROV, tmp_path)
    page.goto(paths["claims.html"].as_uri())
    page.wait_for_load_state("load")
    assert page.errors == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    hrefs = page.eval_on_selector_all("a.chip, table.matrix a", "els => els.map(e => e.getAttribute('href'))")
    assert len(hrefs) == 9 + 4
    assert page.evaluate("hs => hs.filter(h => !h.startsWith('#') || !document.getElementById(h.slice(1)))", hrefs) == []
    shot = Path(os.environ.get("CLAIMS_SCREENSHOT", tmp_path / "report.png"))
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000

    page.select_option("#f-verdict", "holds")
    shown = page.eval_on_selector_all("div.row", "ds => ds.filter(d => d.offsetParent !== null).map(d => d.dataset.verdict)")
    assert shown and set(shown) == {"holds"}
    page.select_option("#f-verdict", "")
    page.select_option("#f-paper", "Induction heads tutorial")
    papers = page.eval_on_selector_all("section.paper", "ss => ss.filter(s => s.offsetParent !== null).map(s => s.dataset.paper)")
    assert set(papers) == {"Induction heads tutorial"}
    assert page.errors == []
