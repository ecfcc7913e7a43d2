"""Tokenisation helpers with the checks a measurement needs: clean and corrupted prompts of the same
length, answers that are single tokens."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from lib.errors import PromptError

Prompts = str | Sequence[str] | Tensor


def to_tokens(model, prompts: Prompts, *, prepend_bos: bool | None = None) -> Int[Tensor, "batch pos"]:
    """Token ids [batch, pos] of a prompt, a list of prompts, or a token tensor (passed through)."""
    if isinstance(prompts, Tensor):
        return prompts if prompts.ndim == 2 else prompts.unsqueeze(0)
    if isinstance(prompts, str):
        prompts = [prompts]
    rows = [model.to_tokens(p, prepend_bos=prepend_bos, truncate=False)[0] for p in prompts]
    for p, r in zip(prompts, rows):
        check_context(model, len(r), f"prompt {p[:60]!r}...")
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        shown = "\n".join(f"  {p!r}: {str_tokens(model, r)}" for p, r in zip(prompts, rows))
        raise PromptError(f"prompts tokenize to different lengths ({sorted(lengths)}):\n{shown}")
    return torch.stack(rows)


def check_context(model, n_tokens: int, what: str) -> None:
    """PromptError where `n_tokens` would not fit the model's context (TransformerLens would cut them)."""
    if n_tokens > model.cfg.n_ctx:
        raise PromptError(f"{what} is {n_tokens} tokens, longer than the model's context of {model.cfg.n_ctx}; "
                          f"it would be cut and measured at another token: shorten it")


def str_tokens(model, tokens: Int[Tensor, " pos"] | Sequence[int]) -> list[str]:
    """The string of each token id."""
    return [model.tokenizer.decode([int(t)]) for t in tokens]


def _unknown(model, ids: Sequence[int]) -> bool:
    unk = getattr(model.tokenizer, "unk_token_id", None)
    return unk is not None and unk in ids


def answer_token(model, answer: str) -> int:
    """The id of `answer` (e.g. " Hart"); PromptError naming its tokens if it is not exactly one known token."""
    ids = model.to_tokens(answer, prepend_bos=False)[0].tolist()
    if len(ids) != 1:
        raise PromptError(
            f"answer {answer!r} is {len(ids)} tokens, not one: {str_tokens(model, ids)}; "
            f"pick an answer that is a single token"
        )
    if _unknown(model, ids):
        raise PromptError(f"answer {answer!r} is not in the vocabulary (it tokenizes to {str_tokens(model, ids)})")
    return ids[0]


def answer_tokens(model, answers: Sequence[str] | Sequence[Sequence[str]]) -> Int[Tensor, "batch n_answers"]:
    """Answer ids [batch, n_answers] from one tuple of answers (`(" bad", " good")`) or one tuple per prompt."""
    if answers and isinstance(answers[0], str):
        answers = [answers]
    return torch.tensor([[answer_token(model, a) for a in row] for row in answers])


def paired_tokens(
    model, clean: Prompts, corrupted: Prompts, *, prepend_bos: bool | None = None
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Clean and corrupted tokens of equal shape; PromptError showing both tokenisations where lengths differ."""
    clean_tokens = to_tokens(model, clean, prepend_bos=prepend_bos)
    corrupted_tokens = to_tokens(model, corrupted, prepend_bos=prepend_bos)
    if clean_tokens.shape[0] != corrupted_tokens.shape[0]:
        raise PromptError(
            f"{clean_tokens.shape[0]} clean prompts but {corrupted_tokens.shape[0]} corrupted ones; pair them one to one"
        )
    if clean_tokens.shape[1] != corrupted_tokens.shape[1]:
        raise PromptError(
            f"clean and corrupted prompts tokenize to different lengths "
            f"({clean_tokens.shape[1]} vs {corrupted_tokens.shape[1]}), so positions do not line up:\n"
            f"  clean:     {str_tokens(model, clean_tokens[0])}\n"
            f"  corrupted: {str_tokens(model, corrupted_tokens[0])}\n"
            f"choose replacement words with the same number of tokens"
        )
    return clean_tokens, corrupted_tokens


def differing_positions(clean_tokens: Tensor, corrupted_tokens: Tensor) -> list[int]:
    """Positions where any clean prompt differs from its corrupted twin."""
    return torch.nonzero((clean_tokens != corrupted_tokens).any(0)).flatten().tolist()
