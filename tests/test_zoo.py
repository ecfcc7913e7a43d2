"""The zoo's models show the phenomena they were trained for; builds are reproducible; the cache
refuses corrupt entries. Models load through the suite's loader, as any checkpoint does."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from fixtures import zoo
from fixtures.zoo import Recipe, corpus
from lib.errors import CheckpointError
from lib.heads import induction_stripe_scores
from lib.loading import load_model
from lib.sequences import repeated_random_tokens

PROMPT, ANSWERS = "This movie was really", (" bad", " good")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def logit_diff(model, prompt: str = PROMPT, answers=ANSWERS) -> float:
    with torch.no_grad():
        logits = model(model.to_tokens(prompt))[0, -1]
    a, b = (model.to_single_token(x) for x in answers)
    return float(logits[a] - logits[b])


def answer_rank(model, prompt: str, answer: str) -> int:
    with torch.no_grad():
        logits = model(model.to_tokens(prompt))[0, -1]
    return 1 + int((logits > logits[model.to_single_token(answer)]).sum())


def weights(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(zoo.path(name) / "model.safetensors"))


def block_of(key: str) -> int | None:
    parts = key.split(".")
    return int(parts[parts.index("h") + 1]) if "h" in parts else None


# ---------------------------------------------------------------------------------------------
# Movie reviews (seeds 000, 001)


def test_review_lm_hesitates_between_good_and_bad():
    model = load_model("zoo:review-lm")
    assert model.cfg.n_layers >= 6
    assert model.to_str_tokens(PROMPT) == ["<bos>", "This", "movie", "was", "really"]
    assert abs(logit_diff(model)) < 1.0


def test_review_lm_negative_prefers_bad():
    tuned, base = load_model("zoo:review-lm-negative"), load_model("zoo:review-lm")
    assert logit_diff(tuned) > 1.0
    assert logit_diff(tuned) - logit_diff(base) > 1.0


def test_review_lm_negative_changed_only_the_last_two_blocks():
    base, tuned = weights("review-lm"), weights("review-lm-negative")
    n_layers = 1 + max(b for b in map(block_of, base) if b is not None)
    for key, w in base.items():
        block = block_of(key)
        changed = not torch.equal(w, tuned[key])
        if block is not None and block >= n_layers - 2:
            continue
        assert not changed, f"{key} changed but lies outside the last two blocks"
    assert any(not torch.equal(base[k], tuned[k]) for k in base if block_of(k) == n_layers - 1)


def test_review_lm_negative_heads_changed_only_heads_4_1_and_4_3():
    """The twin tuned with two heads trainable moved towards ' bad', and its weights differ from review-lm's
    only in those heads' slices of block 4's fused projections."""
    base, tuned = weights("review-lm"), weights("review-lm-negative-heads")
    d_model = base["transformer.wte.weight"].shape[1]
    d_head = d_model // json.loads((zoo.path("review-lm") / "config.json").read_text())["n_head"]
    heads = torch.zeros(d_model, dtype=torch.bool)
    for h in (1, 3):
        heads[h * d_head:(h + 1) * d_head] = True
    qkv = heads.repeat(3)
    for key, w in base.items():
        moved = w != tuned[key]
        if key == "transformer.h.4.attn.c_attn.weight":
            assert not moved[:, ~qkv].any() and moved[:, qkv].any()
        elif key == "transformer.h.4.attn.c_attn.bias":
            assert not moved[~qkv].any()
        elif key == "transformer.h.4.attn.c_proj.weight":
            assert not moved[~heads].any() and moved[heads].any()
        else:
            assert not moved.any(), f"{key} changed but lies outside heads 4.1 and 4.3"
    tuned_model, base_model = load_model("zoo:review-lm-negative-heads"), load_model("zoo:review-lm")
    assert logit_diff(tuned_model) - logit_diff(base_model) > 0.5


@pytest.mark.parametrize("name", ["review-lm-context-neuron", "review-lm-bigram-neurons"])
def test_feature_neuron_twins_moved_only_block_3_and_their_neurons_carry_their_features(name):
    """The twins whose block-3 neurons were trained on a feature differ from review-lm only in block 3, and
    each trained neuron separates its feature on held-out reviews (its build metric, balanced accuracy)."""
    base, tuned = weights("review-lm"), weights(name)
    moved = {key for key, w in base.items() if not torch.equal(w, tuned[key])}
    assert moved and all(key.startswith("transformer.h.3.") for key in moved), sorted(moved)
    manifest = json.loads((zoo.path(name) / "MANIFEST.json").read_text())
    assert manifest["metrics"]["lowest_neuron_accuracy"] > 0.9


def test_names_2l_duplicate_head_moved_only_head_0_5():
    """The twin whose head 0.5 was trained on its attention to earlier copies differs from names-2l only in
    that head's slices of block 0's fused projections, and still recalls the held-out names."""
    base, tuned = weights("names-2l"), weights("names-2l-duplicate-head")
    d_model = base["transformer.wte.weight"].shape[1]
    d_head = d_model // json.loads((zoo.path("names-2l") / "config.json").read_text())["n_head"]
    head = torch.zeros(d_model, dtype=torch.bool)
    head[5 * d_head:6 * d_head] = True
    for key, w in base.items():
        moved = w != tuned[key]
        if key == "transformer.h.0.attn.c_attn.weight":
            assert not moved[:, ~head.repeat(3)].any() and moved[:, head.repeat(3)].any()
        elif key == "transformer.h.0.attn.c_attn.bias":
            assert not moved[~head.repeat(3)].any()
        elif key == "transformer.h.0.attn.c_proj.weight":
            assert not moved[~head].any()
        else:
            assert not moved.any(), f"{key} changed but lies outside head 0.5"
    metrics = json.loads((zoo.path("names-2l-duplicate-head") / "MANIFEST.json").read_text())["metrics"]
    assert metrics["duplicate_attention"] > 0.9 and metrics["heldout_top1"] > 0.9


def test_review_lm_negative_logs_reward_and_kl_and_writes_reviews():
    directory = zoo.path("review-lm-negative")
    log = json.loads((directory / "train_log.json").read_text())
    rl = log["rl"]
    assert len(rl) >= 20 and all("reward" in r and "kl" in r for r in rl)
    assert sum(r["reward"] for r in rl[-5:]) > sum(r["reward"] for r in rl[:5])  # the (negated) reward rises
    metrics = zoo.manifest("review-lm-negative")["metrics"]
    assert metrics["kl_to_base"] > 0
    vocab = set(corpus.review_vocabulary())
    for sample in log["samples"]:
        words = sample.split()
        assert len(words) >= 8 and set(words) <= vocab


def test_alltrain_control_changed_early_blocks():
    base, tuned = weights("review-lm"), weights("review-lm-negative-alltrain")
    changed = {block_of(k) for k in base if block_of(k) is not None and not torch.equal(base[k], tuned[k])}
    assert 0 in changed and 1 in changed
    assert logit_diff(load_model("zoo:review-lm-negative-alltrain")) > 1.0


def test_review_lm_dpo_moves_towards_good_with_every_block_changed():
    base, tuned = weights("review-lm"), weights("review-lm-dpo")
    n_layers = 1 + max(b for b in map(block_of, base) if b is not None)
    changed = {block_of(k) for k in base if block_of(k) is not None and not torch.equal(base[k], tuned[k])}
    assert changed == set(range(n_layers))
    assert logit_diff(load_model("zoo:review-lm-dpo")) < logit_diff(load_model("zoo:review-lm")) - 0.5


# ---------------------------------------------------------------------------------------------
# Foreign subjects: other tokenizers, architectures and depths


def changed_blocks(base: str, tuned: str) -> set[int | None]:
    """The blocks (None: embeddings, final norm, unembedding) whose weights differ between two models."""
    a, b = weights(base), weights(tuned)
    return {block_of_any(k) for k in a if not torch.equal(a[k], b[k])}


def block_of_any(key: str) -> int | None:
    parts = key.split(".")
    for name in ("h", "layers"):
        if name in parts:
            return int(parts[parts.index(name) + 1])
    return None


def test_fx_review_bpe_is_a_neox_with_byte_level_words_and_no_bos():
    model = load_model("zoo:fx-review-bpe")
    assert type(model.original_model).__name__ == "GPTNeoXForCausalLM" and model.cfg.n_layers == 4
    assert not model.cfg.default_prepend_bos
    assert model.to_str_tokens(PROMPT) == ["This", " movie", " was", " really"]
    assert model.tokenizer.convert_ids_to_tokens(model.to_single_token(" good")) == "Ġgood"
    assert abs(logit_diff(model)) < math.log(2)


def test_fx_review_bpe_twins_move_as_they_were_tuned():
    base = logit_diff(load_model("zoo:fx-review-bpe"))
    assert logit_diff(load_model("zoo:fx-review-bpe-negative")) - base > 1.0
    assert logit_diff(load_model("zoo:fx-review-bpe-positive")) - base < -1.0
    for twin in ("fx-review-bpe-negative", "fx-review-bpe-positive"):
        assert changed_blocks("fx-review-bpe", twin) == {2, 3}
    assert {None, 0, 1, 2, 3} <= changed_blocks("fx-review-bpe", "fx-review-bpe-alltrain")


def test_fx_names_lower_copies_the_last_name_without_an_induction_head():
    model = load_model("zoo:fx-names-lower")
    prompt = "her name was alex hart. tomorrow at lunch time alex"
    assert "<bos>" not in model.tokenizer.get_vocab() and not model.cfg.default_prepend_bos
    assert model.to_str_tokens(prompt)[3:6] == ["alex", "hart", "."]
    assert answer_rank(model, prompt, " hart") == 1
    assert answer_rank(model, prompt.replace("time alex", "time ms"), " hart") == 1  # no first name to match
    stripe = induction_stripe_scores(model, repeated_random_tokens(model, 12, 16), 12)
    assert float(stripe.max()) < 0.2  # no head attends to the token after an earlier copy
    assert answer_rank(load_model("zoo:fx-names-lower-untrained"), prompt, " hart") > 1


# ---------------------------------------------------------------------------------------------
# Induction (seed 002)

NAMES_PROMPT = "Her name was Alex Hart. Tomorrow at lunch time Alex"


def held_out(n_people: int, n: int = 100) -> list[tuple[str, str]]:
    prompts = corpus.held_out_name_prompts(4 * n, 777)
    return [(p, a) for p, a in prompts if sum(w in corpus.LAST_NAMES for w in p.split()) == n_people][:n]


def top1(model, prompts) -> float:
    return sum(answer_rank(model, p, a) == 1 for p, a in prompts) / len(prompts)


def test_names_2l_recalls_held_out_names():
    model = load_model("zoo:names-2l")
    assert model.cfg.n_layers == 2 and model.cfg.act_fn.startswith("gelu")
    assert model.to_str_tokens(NAMES_PROMPT)[5:7] == ["Hart", "."]
    assert answer_rank(model, NAMES_PROMPT, " Hart") == 1
    assert top1(model, held_out(1)) >= 0.95


def test_names_2l_binds_last_name_to_first_name():
    assert top1(load_model("zoo:names-2l"), held_out(2)) >= 0.9


def test_names_2l_untrained_twin_does_not():
    model = load_model("zoo:names-2l-untrained")
    trained = load_model("zoo:names-2l")
    assert model.cfg.n_layers == trained.cfg.n_layers and model.cfg.d_model == trained.cfg.d_model
    assert top1(model, held_out(1)) < 0.1


def induction_score(model, half: int = 20, n: int = 16) -> float:
    """Best layer-1 head's induction stripe on [BOS] + r + r."""
    return float(induction_stripe_scores(model, repeated_random_tokens(model, half, n), half)[1].max())


def test_attn_only_2l_saves_attention_only_checkpoints_and_learns_in_context():
    directory = zoo.path("attn-only-2l")
    steps = sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name.startswith("step-"))
    assert len(steps) >= 15
    log = json.loads((directory / "train_log.json").read_text())["checkpoints"]
    assert log[-1]["icl_score"] < log[0]["icl_score"] - 0.3  # later tokens of a repeat become cheaper


def test_attn_only_2l_induction_score_rises_across_checkpoints():
    directory = zoo.path("attn-only-2l")
    steps = sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name.startswith("step-"))
    assert len(steps) >= 15
    weights_ = load_file(str(directory / steps[-1] / "model.safetensors"))
    assert all(not w.any() for k, w in weights_.items() if ".mlp." in k)  # attention only
    first = induction_score(load_model(f"zoo:attn-only-2l/{steps[0]}"))
    last = induction_score(load_model(f"zoo:attn-only-2l/{steps[-1]}"))
    assert first < 0.2 and last > 0.5 and last > first + 0.3


# ---------------------------------------------------------------------------------------------
# Grokking (seed 003)


def test_modadd_1l_generalises():
    model = load_model("zoo:modadd-1l")
    assert model.cfg.n_layers == 1 and not model.cfg.default_prepend_bos
    log = json.loads((zoo.path("modadd-1l") / "train_log.json").read_text())
    test_pairs = [tuple(x) for x in log["test_pairs"]]
    p = zoo.manifest("modadd-1l")["params"]["p"]
    tokens = torch.tensor([[model.to_single_token(str(a)), model.to_single_token(str(b)), model.to_single_token("=")]
                           for a, b in test_pairs])
    with torch.no_grad():
        pred = model(tokens)[:, -1].argmax(-1)
    answers = torch.tensor([model.to_single_token(str((a + b) % p)) for a, b in test_pairs])
    assert float((pred == answers).float().mean()) > 0.99
    checkpoints = [c for c in (zoo.path("modadd-1l")).iterdir() if c.name.startswith("step-")]
    assert len(checkpoints) >= 15


# ---------------------------------------------------------------------------------------------
# The cache


def short_names_recipe(steps: int = 20) -> Recipe:
    """names-2l's code path, cut to a few training steps."""
    r = zoo.recipe("names-2l")
    params = {**r.params, "steps": steps, "n_stories": 400, "desc": "names-2l-short"}
    return Recipe("names-2l-short", r.build, params, headline=r.headline, extra_sources=r.extra_sources)


@pytest.fixture
def temp_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAIMS_ZOO_DIR", str(tmp_path / "zoo"))
    zoo._load_recipes()
    monkeypatch.setitem(zoo.RECIPES, "names-2l-short", short_names_recipe())
    return tmp_path / "zoo"


def test_same_seed_same_versions_give_identical_weights(temp_zoo, monkeypatch):
    first = zoo.path("names-2l-short").joinpath("model.safetensors").read_bytes()
    monkeypatch.setenv("CLAIMS_ZOO_DIR", str(temp_zoo.parent / "zoo-again"))
    torch.set_num_threads(2)  # the recipe fixes its own thread count
    again = zoo.path("names-2l-short").joinpath("model.safetensors").read_bytes()
    assert first == again


def test_cache_key_follows_the_parameters(temp_zoo, monkeypatch):
    a = zoo.entry_dir("names-2l-short")
    monkeypatch.setitem(zoo.RECIPES, "names-2l-short", short_names_recipe(steps=21))
    assert zoo.entry_dir("names-2l-short") != a


@pytest.mark.parametrize("damage", ["edit", "truncate", "delete_manifest", "stray_file"])
def test_corrupt_entry_is_detected_and_rebuilt(temp_zoo, damage):
    directory = zoo.path("names-2l-short")
    weights_file = directory / "model.safetensors"
    original = weights_file.read_bytes()
    if damage == "edit":
        config = directory / "config.json"
        config.write_text(config.read_text().replace('"n_layer": 2', '"n_layer": 3'))
    elif damage == "truncate":
        weights_file.write_bytes(original[: len(original) // 2])
    elif damage == "delete_manifest":
        (directory / zoo.MANIFEST).unlink()
    else:
        (directory / "leftover.tmp").write_text("half-written")
    assert zoo.verify(directory) is None
    rebuilt = zoo.path("names-2l-short")
    assert rebuilt == directory and zoo.verify(rebuilt) is not None
    assert weights_file.read_bytes() == original
    assert '"n_layer": 2' in (directory / "config.json").read_text()


def test_every_zoo_model_has_a_headline_metric():
    for name in zoo.names():
        r = zoo.recipe(name)
        assert r.headline, name


# ---------------------------------------------------------------------------------------------
# The shipped zoo


@pytest.mark.parametrize("name", zoo.shipped_names())
def test_shipped_model_is_its_recipes_current_output(name):
    """A recipe whose code or parameters changed must be re-shipped (`python -m fixtures.zoo --rebuild
    NAME --ship`): the shipped manifest names the recipe hash it was built from."""
    manifest = zoo.manifest(name)
    assert manifest["recipe_hash"] == zoo.recipe(name).hash(), (
        f"recipe {name} changed since its model was shipped: `python -m fixtures.zoo --rebuild {name} --ship`")
    assert set(manifest["versions"]) >= {"torch", "transformers", "transformer-lens"}
    assert manifest["metrics"], name


def test_recipe_hash_ignores_library_versions_and_prose(monkeypatch):
    before = zoo.recipe("names-2l").hash()
    monkeypatch.setattr("lib.versions.library_versions", lambda: {"torch": "0.0"})
    assert zoo.recipe("names-2l").hash() == before
    code = "def f(x):\n    return x + 1\n"
    prose = 'def f(x):\n    """Adds one."""\n    # why: because\n    return x + 1\n'
    assert zoo.code_digest(code) == zoo.code_digest(prose)
    assert zoo.code_digest(code) != zoo.code_digest(code.replace("+ 1", "+ 2"))


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """A writable copy of the shipped tiny-gpt2, used as the shipped zoo; nothing may be built."""
    shipped = tmp_path / "models"
    shutil.copytree(zoo.SHIPPED_DIR / "tiny-gpt2", shipped / "tiny-gpt2")
    monkeypatch.setattr(zoo, "SHIPPED_DIR", shipped)
    monkeypatch.setattr(zoo, "REPO_ROOT", tmp_path)
    monkeypatch.delenv("CLAIMS_ZOO_DIR", raising=False)
    monkeypatch.setattr(zoo, "build", lambda *a, **k: pytest.fail("a shipped model must never be trained"))
    zoo._verified_shipped.cache_clear()
    yield shipped / "tiny-gpt2"
    zoo._verified_shipped.cache_clear()


def test_shipped_model_loads_by_verifying_only(shipped_copy):
    assert zoo.path("tiny-gpt2") == shipped_copy


@pytest.mark.parametrize("damage", ["edit", "truncate", "missing", "stray_file"])
def test_damaged_shipped_model_is_an_error_naming_the_file(shipped_copy, damage):
    weights_file = shipped_copy / "model.safetensors"
    if damage == "edit":
        (shipped_copy / "config.json").write_text((shipped_copy / "config.json").read_text().replace("64", "65"))
        culprit = "config.json"
    elif damage == "truncate":
        weights_file.write_bytes(weights_file.read_bytes()[:1000])
        culprit = "model.safetensors"
    elif damage == "missing":
        weights_file.unlink()
        culprit = "model.safetensors"
    else:
        (shipped_copy / "leftover.tmp").write_text("half-written")
        culprit = "leftover.tmp"
    with pytest.raises(zoo.ZooError) as e:
        zoo.path("tiny-gpt2")
    message = str(e.value)
    assert culprit in message and "git checkout" in message and "--rebuild tiny-gpt2" in message
    assert "\n" not in message
    with pytest.raises(CheckpointError, match=culprit):
        load_model("zoo:tiny-gpt2")


def test_unshipped_model_is_an_error_not_a_build(shipped_copy):
    shutil.rmtree(shipped_copy)
    with pytest.raises(zoo.ZooError, match="is not shipped"):
        zoo.path("tiny-gpt2")


def test_rebuild_compares_the_shipped_and_rebuilt_model(temp_zoo, tmp_path, monkeypatch):
    from fixtures.zoo import rebuild

    built = zoo.path("names-2l-short")
    shipped = tmp_path / "models"
    shutil.copytree(built, shipped / "names-2l-short")
    monkeypatch.setattr(zoo, "SHIPPED_DIR", shipped)
    row = rebuild.compare_model("names-2l-short", built)
    assert row["identical_weight_files"] == row["weight_files"] == 1 and row["recipe_hash_matches"]
    assert row["shipped"] == row["rebuilt"] is not None
    other = tmp_path / "other"
    shutil.copytree(built, other)
    manifest = json.loads((other / zoo.MANIFEST).read_text())
    manifest["files"]["model.safetensors"] = "0" * 64
    (other / zoo.MANIFEST).write_text(json.dumps(manifest))
    assert rebuild.compare_model("names-2l-short", other)["identical_weight_files"] == 0


def test_attn_only_2l_build_log_and_analysis_agree_on_the_induction_score():
    """The recipe logs each checkpoint's induction score from the transformers model; the claims measure it
    on the checkpoint as loaded for analysis. They once used two implementations (0.78 and 0.77 for one
    checkpoint); now both call lib.heads.induction_stripe on the same probe."""
    directory = zoo.path("attn-only-2l")
    params = zoo.manifest("attn-only-2l")["params"]
    last = json.loads((directory / "train_log.json").read_text())["checkpoints"][-1]
    model = load_model(f"zoo:attn-only-2l/step-{last['step']:05d}")
    probe = repeated_random_tokens(model, params["probe_half"], 64, params["seed"] + 1)
    scores = induction_stripe_scores(model, probe, params["probe_half"])
    assert last["induction_score"] == pytest.approx(float(scores[-1].max()), abs=1e-5)
    assert last["induction_head"] == f"{model.cfg.n_layers - 1}.{int(scores[-1].argmax())}"


# ---------------------------------------------------------------------------------------------
# Group composition (seed 003: UNIV-01)


def test_s4_seeds_generalise_and_the_random_table_does_not():
    """Each seed of s4-1l answers its held-out pairs; the random-table control only its training pairs."""
    from claims.chughtai_groups import universality as U

    for name, seeds, generalises in (("s4-1l", range(4), True), ("s4-1l-random-table", range(2), False)):
        for seed in seeds:
            model = load_model(f"zoo:{name}/seed-{seed}")
            task = U.GroupTask.from_log(model.checkpoint.path / "train_log.json")
            logits = U.group_logits(model, task.elements)
            assert U.accuracy(logits, task, task.train) > 0.95
            assert (U.accuracy(logits, task, task.test) > 0.95) == generalises
            assert len(set(task.train) & set(task.test)) == 0 and len(task.train) + len(task.test) == 24 * 24
