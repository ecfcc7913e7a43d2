"""Common English first and last names: the people of the name-recall prompts and of the stories the
name-recall models are trained on."""
from __future__ import annotations

FIRST_NAMES: tuple[str, ...] = tuple(
    "Alex Sarah John Mary James Emma David Anna Michael Laura Daniel Julia Peter Kate Thomas Lucy Paul Grace "
    "Mark Alice Chris Helen Tom Rose Sam Clara Ben Nora Jack Ella Adam Maya Luke Ruth Ryan Ivy Eric Jane Noah "
    "Amy George Susan Frank Linda Henry Karen Steve Lisa".split()
)
LAST_NAMES: tuple[str, ...] = tuple(
    "Hart Carroll Smith Jones Brown Miller Davis Wilson Moore Taylor Clark Lewis Walker Young King Wright Hill "
    "Scott Green Baker Adams Nelson Carter Mitchell Turner Parker Collins Stewart Morris Murphy Cook Rogers "
    "Morgan Cooper Reed Bailey Bell Kelly Howard Ward Cox Price Wood Barnes Ross Fisher Hunt Stone Black Fox".split()
)
