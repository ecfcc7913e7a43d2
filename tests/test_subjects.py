"""The subjects registry and ad-hoc subjects from the command line."""
import pytest

from fixtures import subjects as registry
from fixtures.catalogue import CLAIMS, marker

PAIR = """
[subjects.my-pair]
[subjects.my-pair.params]
prompt = "This movie was really"
answers = [" bad", " good"]
[subjects.my-pair.claims.RLHF-01]
[subjects.my-pair.claims.RLHF-08]
heads = ["10.4", "10.9"]
[subjects.my-pair.claims.RLHF-02]
expect = "refuted"
fails = ["frozen_blocks_max_abs_weight_change"]
reason = "every block was trained"
"""

REFUTATION = "[subjects.x.claims.RLHF-04]\nexpect = 'refuted'\n"


def test_registry_loads_and_names_only_known_claims():
    subjects = registry.load_registry()
    assert {"gpt2-imdb-rlhf", "gpt2-small", "gelu-2l", "tiny-gpt2"} <= set(subjects)
    for s in subjects.values():
        assert set(s.claims) <= set(CLAIMS)
        assert s.origin in ("hub", "zoo")


def test_every_claim_has_a_marker_in_pytest_ini():
    text = open("pytest.ini").read()
    for claim in CLAIMS:
        assert f"    {marker(claim)}:" in text
    for seed in ("seed000", "seed001", "seed002", "seed003", "seed004"):
        assert f"    {seed}:" in text


def test_claim_params_overlay_subject_params(tmp_path):
    f = tmp_path / "pair.toml"
    f.write_text(PAIR)
    (s,) = registry.load(f).values()
    assert s.claim_params("RLHF-08") == {"prompt": "This movie was really", "answers": [" bad", " good"],
                                         "heads": ["10.4", "10.9"]}
    assert s.refutation("RLHF-02") == registry.Refutation(("frozen_blocks_max_abs_weight_change",), "every block was trained")
    assert s.refutation("RLHF-01") is None


def test_adhoc_pair_takes_checkpoints_from_the_command_line(tmp_path):
    f = tmp_path / "pair.toml"
    f.write_text(PAIR)
    subjects = registry.select(checkpoints=["base=/ckpt/base", "tuned=/ckpt/tuned"], subject_file=f)
    assert subjects["my-pair"].checkpoints == {"base": "/ckpt/base", "tuned": "/ckpt/tuned"}
    single = registry.select(checkpoints=["/ckpt/one"], subject_file=f)
    assert single["my-pair"].checkpoints == {"model": "/ckpt/one"}


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[subjects.x.claims.NOPE-01]", "unknown claim ID"),
        ("[subjects.x]\ncheckpoints = { donor = 'a' }", "unknown checkpoint role"),
        (REFUTATION + "fails = ['below_over_largest_change']", "needs a reason"),
        (REFUTATION + "reason = 'every block was trained'", "needs fails = "),
        (REFUTATION + "fails = []\nreason = 'every block was trained'", "needs fails = "),
        (REFUTATION + "fails = 'below_over_largest_change'\nreason = 'every block was trained'", "needs fails = "),
        (REFUTATION + "fails = [1]\nreason = 'every block was trained'", "needs fails = "),
        ("[subjects.x.claims.RLHF-04]\nfails = ['below_over_largest_change']", "add expect = \"refuted\""),
        ("[subjects.x.claims.RLHF-01]\nexpect = 'maybe'", "expect must be"),
        ("[subjects", "not valid TOML"),
        ("title = 'nothing'", "defines no"),
    ],
)
def test_bad_registry_entries_are_named(text, problem):
    with pytest.raises(registry.RegistryError, match=problem):
        registry.parse(text, "f.toml")


def test_checkpoint_without_subject_file_says_what_is_missing():
    with pytest.raises(registry.RegistryError, match="--subject-file"):
        registry.select(checkpoints=["/some/dir"])


def test_unknown_subject_name():
    with pytest.raises(registry.RegistryError, match="unknown subject"):
        registry.select(names=["no-such-subject"])


def test_origin_filter():
    assert all(s.origin == "zoo" for s in registry.select(origin="zoo").values())
    assert all(s.origin == "hub" for s in registry.select(origin="hub").values())


def test_a_reason_with_a_measured_figure_is_refused_in_one_line():
    text = REFUTATION + "fails = ['below_over_largest_change']\nreason = 'per-head DLA differences below layer 4 reach 0.28'"
    with pytest.raises(registry.RegistryError) as e:
        registry.parse(text, "zoo/subjects.toml")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("zoo/subjects.toml, subject 'x', claim RLHF-04: the reason carries a figure")
    assert "reach 0.28" in message and "say why in words" in message


def test_a_reason_may_name_the_setup():
    text = REFUTATION + 'fails = ["below_over_largest_change"]\nreason = "blocks 0-3 were frozen; the paper\'s l1 1e-3"'
    (s,) = registry.parse(text, "f.toml").values()
    assert s.refutation("RLHF-04") == registry.Refutation(("below_over_largest_change",),
                                                          "blocks 0-3 were frozen; the paper's l1 1e-3")


def test_both_registries_register_refutations_by_check():
    refutations = [s.refutation(c) for s in registry.load_registry().values() for c in s.claims]
    assert sum(r is not None for r in refutations) > 0
