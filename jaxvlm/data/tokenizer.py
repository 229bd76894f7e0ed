"""A character tokenizer over printable ASCII (for the embedded synthetic tasks)."""

from __future__ import annotations

import string
from typing import Sequence

SPECIALS = ("<pad>", "<bos>", "<eos>")
ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"


class CharTokenizer:
  """ids 0..2 are ``<pad> <bos> <eos>``; each character of ``ALPHABET`` has one id after them;
  ``extra_tokens`` (e.g. image placeholders) get the ids after the alphabet, so the ids of a
  tokenizer without them never move. Extra tokens are never produced by :meth:`encode` (callers
  insert :meth:`token_id` values) and :meth:`decode` skips them.

  Characters outside the alphabet raise ``ValueError`` (the synthetic data never has any).
  """

  pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

  def __init__(self, alphabet: str = ALPHABET, extra_tokens: Sequence[str] = ()):
    self.alphabet = alphabet
    self.extra_tokens = tuple(extra_tokens)
    self._ids = {c: i + len(SPECIALS) for i, c in enumerate(alphabet)}

  @property
  def vocab_size(self) -> int:
    return len(SPECIALS) + len(self.alphabet) + len(self.extra_tokens)

  def token_id(self, token: str) -> int:
    """The id of a special or extra token (e.g. ``"<image>"``)."""
    names = SPECIALS + self.extra_tokens
    if token not in names:
      raise ValueError(f"token: got {token!r}, expected one of {names}")
    i = names.index(token)
    return i if i < len(SPECIALS) else len(SPECIALS) + len(self.alphabet) + i - len(SPECIALS)

  def encode(self, text: str) -> list[int]:
    try:
      return [self._ids[c] for c in text]
    except KeyError as e:
      raise ValueError(f"text: character {e.args[0]!r} is not in the tokenizer's alphabet") from None

  def decode(self, ids: Sequence[int]) -> str:
    """Characters up to the first ``<eos>``; ``<pad>``/``<bos>`` are skipped."""
    out = []
    for i in ids:
      i = int(i)
      if i == self.eos_token_id:
        break
      if len(SPECIALS) <= i < len(SPECIALS) + len(self.alphabet):
        out.append(self.alphabet[i - len(SPECIALS)])
    return "".join(out)
