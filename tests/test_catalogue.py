"""One declaration per claim: the catalogue, the markers, the listing and the checking of subject files
all come from the `@claim` declarations."""
import pytest

from fixtures import catalogue
from fixtures import subjects as registry

SOURCES = ("seed000", "seed001", "seed002", "seed003", "seed004")


def test_every_claim_is_declared_once_in_its_papers_folder():
    claims = catalogue.claims()
    assert len(claims) >= 36
    for cid, c in claims.items():
        assert c.id == cid and c.statement and c.shown and c.rule, cid
        assert c.paper.source in SOURCES
        assert (catalogue.CLAIMS_DIR / c.paper.key / "__init__.py").is_file()
        for name, p in c.params.items():
            assert p.meaning, f"{cid}: parameter {name} has no meaning"


def test_every_claim_must_hold_on_one_zoo_subject_and_be_refuted_on_another():
    """A claim test means something only where the same thresholds both pass and fail: every claim is
    registered on a zoo subject where it must hold and on one where it must be refuted (`make test` asserts
    both verdicts), or its declaration says why no such subject exists. A declared reason beside a
    registered subject is stale."""
    zoo = [s for s in registry.load_registry().values() if s.origin == "zoo" and not s.unavailable]
    problems = []
    for cid, c in sorted(catalogue.claims().items()):
        holds = [s.name for s in zoo if cid in s.claims and s.refutation(cid) is None]
        refuted = [s.name for s in zoo if cid in s.claims and s.refutation(cid) is not None]
        for verb, names, why in (("hold", holds, c.no_subject_holds), ("be refuted", refuted, c.no_subject_refuted)):
            if not names and not why:
                problems.append(f"{cid}: no zoo subject where it must {verb}, and no reason declared")
            if names and why:
                problems.append(f"{cid}: must {verb} on {', '.join(names)}, yet declares that no subject does")
    assert not problems, "\n".join(problems)


def test_each_claim_paper_and_source_is_a_marker(pytestconfig):
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    for c in catalogue.claims().values():
        assert {c.marker, c.paper.key, c.paper.source} <= registered


def test_listing_shows_each_claim_with_its_parameters():
    text = catalogue.listing()
    for cid, c in catalogue.claims().items():
        assert cid in text
        for name, p in c.params.items():
            assert f"    {name} (" in text and p.meaning in text


def subject_file(tmp_path, table: str, shared: str = "") -> str:
    f = tmp_path / "s.toml"
    f.write_text(f'[subjects.s]\n[subjects.s.params]\nprompt = "This movie was really"\nanswers = [" bad", " good"]\n'
                 f"{shared}\n[subjects.s.claims.RLHF-01]\n{table}\n")
    return f


@pytest.mark.parametrize("table,shared,message", [
    ("min_odd = 2.0", "", "claim RLHF-01: unknown parameter 'min_odd'; did you mean 'min_odds'?"),
    ('min_odds = "2"', "", "parameter 'min_odds' is '2' (str); it takes int or float"),
    ("", "tuned_layer = [4, 5]", "params: unknown parameter 'tuned_layer'; did you mean 'tuned_layers'?"),
])
def test_a_subject_file_is_checked_against_the_declaration(tmp_path, table, shared, message):
    with pytest.raises(registry.RegistryError) as e:
        registry.load(subject_file(tmp_path, table, shared))
    assert message in str(e.value)
    assert str(e.value).count("\n") == 0


def test_a_required_parameter_given_nowhere_is_an_error_when_the_subject_runs(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("[subjects.s]\n[subjects.s.claims.RLHF-01]\n")
    registry.load(f)  # a file may be incomplete (a base for `like`) ...
    with pytest.raises(registry.RegistryError, match="subject 's', claim RLHF-01: parameter 'prompt' .* is required"):
        registry.select(subject_file=f)  # ... not a subject that runs


def test_an_unknown_claim_id_names_the_closest(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("[subjects.s]\n[subjects.s.claims.RLHF-1]\n")
    with pytest.raises(registry.RegistryError, match="unknown claim ID 'RLHF-1'; did you mean"):
        registry.load(f)


def test_list_claims_option(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(catalogue.CLAIMS_DIR.parent))
    pytester.makeini("[pytest]\naddopts = -p fixtures.models -p fixtures.plugin\n")
    result = pytester.runpytest_subprocess("--list-claims")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["RLHF-01  [[]tigges_rlhf, seed000[]]*", "    rule: Holds when*", "    min_odds (default 2.0): *"])
