"""The subjects registry and ad-hoc subjects from the command line."""
import pytest

from fixtures import catalogue
from fixtures import subjects as registry

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
        assert set(s.claims) <= set(catalogue.claims())
        assert s.origin in ("hub", "zoo")


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


LIKE = """
[subjects.base]
origin = "zoo"
description = "the trained model"
checkpoints = { model = "zoo:base" }
unavailable = "not built yet"
[subjects.base.params]
prompt = "Her name was Alex Hart. Tomorrow at lunch time Alex"
answer = " Hart"
positions = { first_name = 4, final = 11 }
[subjects.base.claims.IND-01]
max_rank = 1
[subjects.base.claims.IND-02]
layer = 0
[subjects.base.claims.IND-07]
min_score = 0.4
family_size = 40
expect = "refuted"
fails = ["duplicate_token_score_0.5"]
reason = "no duplicate-token head forms"
by_construction = "a caveat of the trained model"

[subjects.control]
like = "base"
checkpoints = { model = "zoo:control" }
[subjects.control.params]
answer = " Carroll"
positions = { final = 12 }
[subjects.control.claims.IND-01]
[subjects.control.claims.IND-07]
family_size = 20
[subjects.control.claims.IND-08]
min_percentile = 0.9
"""


def test_like_inherits_params_and_the_same_claims_tables():
    subjects = registry.parse(LIKE, "f.toml")
    control = subjects["control"]
    assert (control.origin, control.description) == ("zoo", "the trained model")
    assert control.checkpoints == {"model": "zoo:control"}
    assert control.unavailable == ""  # never inherited
    assert control.params == {"prompt": "Her name was Alex Hart. Tomorrow at lunch time Alex", "answer": " Carroll",
                              "positions": {"final": 12}}  # a value given replaces the inherited one whole
    assert list(control.claims) == ["IND-01", "IND-07", "IND-08"]  # IND-02 is not registered on the control
    assert control.claim_params("IND-01")["max_rank"] == 1
    assert control.claim_params("IND-07") == {**control.params, "min_score": 0.4, "family_size": 20}
    assert control.claims["IND-08"] == {"min_percentile": 0.9}
    assert subjects["base"].claims["IND-07"]["family_size"] == 40  # the subject it is like is untouched


def test_like_never_inherits_a_refutation():
    control = registry.parse(LIKE, "f.toml")["control"]
    for key in ("expect", "fails", "reason", "by_construction"):
        assert key not in control.claims["IND-07"]
    assert control.refutation("IND-07") is None
    text = LIKE + "expect = 'refuted'\nfails = ['Q_composition_percentile']\nreason = 'untrained'\n"  # on IND-08
    assert registry.parse(text, "f.toml")["control"].refutation("IND-08") == registry.Refutation(
        ("Q_composition_percentile",), "untrained")


def test_a_like_chain_resolves_link_by_link():
    text = LIKE + """
[subjects.grandchild]
like = "control"
[subjects.grandchild.params]
prompt = "Her name was Sam Hart. Tomorrow at lunch time Sam"
[subjects.grandchild.claims.IND-07]
min_score = 0.5
"""
    g = registry.parse(text, "f.toml")["grandchild"]
    assert g.checkpoints == {"model": "zoo:control"} and g.origin == "zoo"
    assert g.claim_params("IND-07") == {"prompt": "Her name was Sam Hart. Tomorrow at lunch time Sam",
                                        "answer": " Carroll", "positions": {"final": 12},
                                        "min_score": 0.5, "family_size": 20}
    assert g.refutation("IND-07") is None


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[subjects.x]\nlike = 'bsae'\n[subjects.base.claims.IND-04]",
         "f.toml, subject 'x': like = 'bsae' names no subject of f.toml (did you mean 'base'?); `like` takes the NAME"),
        ("[subjects.a]\nlike = 'b'\n[subjects.b]\nlike = 'c'\n[subjects.c]\nlike = 'a'",
         "f.toml, subject 'c': like = 'a' closes a cycle (a -> b -> c -> a); let one of them state its entries"),
        ("[subjects.a]\nlike = 'a'", "f.toml, subject 'a': like = 'a' closes a cycle (a -> a)"),
        ("[subjects.a]\nlike = 1", "f.toml, subject 'a': like must be the name of another subject"),
    ],
)
def test_unknown_like_and_cycles_are_one_line_errors(text, problem):
    with pytest.raises(registry.RegistryError) as e:
        registry.parse(text, "f.toml")
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(problem)


SHARED = """
[subjects.lm.params]
prompt = "This movie was really"
[subjects.lm.claims."SAE-*"]
sae = { layer = 1 }
heldout_text = { reviews = 400, seed = 41 }
[subjects.lm.claims.SAE-01]
min_loss_recovered = 0.76
[subjects.lm.claims.SAE-02]
heldout_text = { reviews = 100, seed = 7 }
[subjects.lm.claims.N2G-01]
layers = [4, 5]
"""


def test_a_shared_claim_block_lies_under_the_matching_claims_only():
    (s,) = registry.parse(SHARED, "f.toml").values()
    assert list(s.claims) == ["SAE-01", "SAE-02", "N2G-01"]
    assert s.claim_params("SAE-01") == {"prompt": "This movie was really", "sae": {"layer": 1},
                                        "heldout_text": {"reviews": 400, "seed": 41}, "min_loss_recovered": 0.76}
    assert s.claim_params("SAE-02")["heldout_text"] == {"reviews": 100, "seed": 7}
    assert s.claim_params("N2G-01") == {"prompt": "This movie was really", "layers": [4, 5]}


@pytest.mark.parametrize(
    "text, problem",
    [
        (SHARED + "[subjects.lm.claims.\"IND-*\"]\nmin_score = 0.4", "claim block 'IND-\\*' matches none of the claims"),
        (SHARED.replace("sae = ", "expect = 'refuted'\nsae = "), "expect belong\\(s\\) in each claim's own table"),
    ],
)
def test_bad_shared_claim_blocks_are_named(text, problem):
    with pytest.raises(registry.RegistryError, match=problem):
        registry.parse(text, "f.toml")


def test_zoo_controls_take_their_subjects_tables_but_not_their_refutations():
    subjects = registry.load(registry.ZOO_REGISTRY)
    trained, control = subjects["names-2l"], subjects["names-2l-untrained"]
    assert control.params == trained.params and control.checkpoints == {"model": "zoo:names-2l-untrained"}
    for c in control.claims:
        own = {k: v for k, v in control.claim_params(c).items() if k not in ("expect", "fails", "reason")}
        assert own == {k: v for k, v in trained.claim_params(c).items() if k not in ("expect", "fails", "reason")}
    assert control.refutation("IND-07").fails != trained.refutation("IND-07").fails
    untrained, trained = subjects["review-lm-untrained"].refutation("N2G-01"), subjects["review-lm"].refutation("N2G-01")
    assert untrained.reason.startswith("untrained") and not trained.reason.startswith("untrained")
    swapped = subjects["review-pair-towards-good"]
    assert swapped.claim_params("RLHF-08")["heads"] == subjects["review-pair"].claim_params("RLHF-08")["heads"]
    assert subjects["review-pair"].refutation("RLHF-08") is None and swapped.refutation("RLHF-08") is not None
