"""The published seed-000 pair's code path, offline: randomly initialised GPT-2-small-shaped checkpoints
with a byte-level BPE tokenizer are placed in a local Hub cache under the pair's Hub ids, and every
RLHF claim must run to a verdict. The verdicts of random weights mean nothing and are not asserted."""
import json
from pathlib import Path

import pytest
import torch
import transformer_lens.model_bridge  # noqa: F401  imported once: pytester's in-process runs re-import new modules

from tests.conftest import hub_layout

BASE, TUNED = "lvwerra/gpt2-imdb", "curt-tigges/gpt2-negative-movie-reviews"


def bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from fixtures.prompts import ADJECTIVE_PAIRS, REVIEW_TEMPLATES

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = [f"{t}{a}." for t in REVIEW_TEMPLATES for pair in ADJECTIVE_PAIRS for a in pair] * 20
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


@pytest.fixture(scope="module")
def published_pair_cache(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("published")
    tokenizer = bpe_tokenizer()
    config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    for name, seed in ((BASE, 0), (TUNED, 1)):
        if seed:  # the tuned twin: the same weights with the last two blocks changed
            torch.manual_seed(seed)
            with torch.no_grad():
                for pname, p in model.named_parameters():
                    if ".h.10." in pname or ".h.11." in pname:
                        p.add_(0.02 * torch.randn_like(p))
        src = root / name.replace("/", "__")
        model.save_pretrained(str(src))
        tokenizer.save_pretrained(str(src))
        hub_layout(src, root / "hf_home", name)
    return root / "hf_home"


def test_published_pair_runs_to_a_verdict_offline(pytester, published_pair_cache, monkeypatch):
    from lib import loading

    monkeypatch.setenv("HF_HOME", str(published_pair_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loading.hub_reachable.cache_clear()
    root = Path(__file__).resolve().parents[1]
    out = pytester.path / "out"
    result = pytester.runpytest_inprocess(str(root / "claims" / "tigges_rlhf"), "-c", str(root / "pytest.ini"),
                                          "--rootdir", str(root), "-p", "no:cacheprovider", "--subject",
                                          "gpt2-imdb-rlhf", "--report-dir", str(out), "-m", "seed000")
    loading.hub_reachable.cache_clear()
    doc = json.loads((out / "claims.json").read_text())
    rows = {r["claim"]: r for r in doc["results"]}
    assert sorted(rows) == [f"RLHF-0{i}" for i in range(1, 9)]
    for claim, row in rows.items():
        assert row["verdict"] in ("holds", "refuted"), (claim, row["reason"])
        assert row["measured"], claim
    assert doc["provenance"]["checkpoints"][BASE]["source"] == "hub"
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
