"""A character tokenizer over printable ASCII (for the embedded synthetic tasks)."""

from __future__ import annotations

import string
from typing import Sequence

SPECIALS = ("<pad>", "<bos>", "<eos>")
ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"


class CharTokenizer:
  """ids 0..2 are ``<pad> <bos> <eos>``; each character of ``ALPHABET`` has one id after them.

  Characters outside the alphabet raise ``ValueError`` (the synthetic data never has any).
  """

  pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

  def __init__(self, alphabet: str = ALPHABET):
    self.alphabet = alphabet
    self._ids = {c: i + len(SPECIALS) for i, c in enumerate(alphabet)}

  @property
  def vocab_size(self) -> int:
    return len(SPECIALS) + len(self.alphabet)

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
