"""SGL run settings: pruning, guide and reasoning modes, early exit and the prompt strings.

Prompts are ``str.format`` templates over ``{question}`` (and ``{hint}`` / ``{rationale}``); the
defaults below are what ``configs/sgl.py`` documents. Modes:

* ``guide_reasoning_mode``: ``none`` (the guide answers ``answer_prompt``), ``short_cot``
  (``short_cot_prompt``) or ``explicit_cot`` (``explicit_cot_prompt``, a ``Reasoning: / Answer:``
  format): the guide generates first and the attention of its prompt text after the image and of
  its generated tokens is the importance.
* ``guide_text_mode``: ``none`` or ``short_rationale``: the guide also writes a rationale
  (``rationale_prompt``) that the large model reads as a hint (``hint_prompt``). The hint is
  decoded to text by the guide's tokenizer and tokenized again with the large model's prompt, so
  the two tokenizers may differ.
* ``reasoning_mode`` (single-model runs): ``normal`` (``answer_prompt``), ``prompt`` (one pass
  with ``cot_prompt``; the whole output is the answer) or ``two_pass`` (a rationale with
  ``cot_prompt``, then ``two_pass_prompt`` with ``{rationale}`` filled in).
* ``selection``: ``guide`` (top tokens by the guide's attention) or ``random`` (a seeded uniform
  draw: the control).

``min_new_tokens`` 1 and the confidence / consistency scores follow SGL's evaluation
(``eval/vqa/evaluate_vqa.py``): confidence = geometric mean of the guide's token probabilities,
consistency = their product with only ``consistency_token_ratio`` of the visual tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jaxvlm.errors import ConfigError
from jaxvlm.methods.sgl.importance import num_kept, prune_layer_index

GUIDE_TEXT_MODES = ("none", "short_rationale")
GUIDE_REASONING_MODES = ("none", "short_cot", "explicit_cot")
REASONING_MODES = ("normal", "two_pass", "prompt")
SELECTIONS = ("guide", "random")

ANSWER_PROMPT = "{question}"
SHORT_COT_PROMPT = "{question} Think briefly about where to look, then answer."
EXPLICIT_COT_PROMPT = "{question} Reasoning: describe the relevant region step by step. Answer:"
RATIONALE_PROMPT = "{question} Give a short rationale."
HINT_PROMPT = "{question} Hint: {hint}"
COT_PROMPT = "{question} Let's think step by step."
TWO_PASS_PROMPT = "{question} Reasoning: {rationale} Answer:"


def _choice(field: str, value: str, options: tuple[str, ...]) -> None:
  if value not in options:
    raise ConfigError(field, value, f"one of {options}")


@dataclasses.dataclass(frozen=True)
class SGLSettings:
  """One SGL run's method settings (validated on construction; errors name the field)."""

  prune_layer: float = 0.0
  prune_ratio: float = 0.4
  selection: str = "guide"
  guide_text_mode: str = "none"
  guide_reasoning_mode: str = "none"
  reasoning_mode: str = "normal"
  consistency_token_ratio: float = 0.05
  early_exit_threshold: float = 0.0  # 0 = off; else answer with the guide when score >= it
  max_new_tokens: int = 16
  guide_max_new_tokens: int = 32  # CoT / rationale generation
  min_new_tokens: int = 1  # no EOS as the first token (SGL's generation_config)
  answer_prompt: str = ANSWER_PROMPT
  short_cot_prompt: str = SHORT_COT_PROMPT
  explicit_cot_prompt: str = EXPLICIT_COT_PROMPT
  rationale_prompt: str = RATIONALE_PROMPT
  hint_prompt: str = HINT_PROMPT
  cot_prompt: str = COT_PROMPT
  two_pass_prompt: str = TWO_PASS_PROMPT
  seed: int = 0

  def __post_init__(self):
    num_kept(1, self.prune_ratio)
    prune_layer_index(1, self.prune_layer)
    if not 0.0 < self.consistency_token_ratio <= 1.0:
      raise ConfigError("consistency_token_ratio", self.consistency_token_ratio,
                        "a value in (0, 1]")
    if not 0.0 <= self.early_exit_threshold <= 1.0:
      raise ConfigError("early_exit_threshold", self.early_exit_threshold,
                        "a value in [0, 1] (0 = off)")
    _choice("selection", self.selection, SELECTIONS)
    _choice("guide_text_mode", self.guide_text_mode, GUIDE_TEXT_MODES)
    _choice("guide_reasoning_mode", self.guide_reasoning_mode, GUIDE_REASONING_MODES)
    _choice("reasoning_mode", self.reasoning_mode, REASONING_MODES)
    for name in ("max_new_tokens", "guide_max_new_tokens"):
      if getattr(self, name) < 1:
        raise ConfigError(name, getattr(self, name), "an integer >= 1")
    if not 0 <= self.min_new_tokens <= min(self.max_new_tokens, self.guide_max_new_tokens):
      raise ConfigError("min_new_tokens", self.min_new_tokens,
                        "an integer in [0, min(max_new_tokens, guide_max_new_tokens)]")

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]) -> "SGLSettings":
    """From a config section; unknown keys raise ``ConfigError`` naming them."""
    names = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(values) - names)
    if extra:
      raise ConfigError("sgl", extra, f"keys among {sorted(names)}")
    return cls(**dict(values))

  def guide_prompt(self) -> str:
    return {"none": self.answer_prompt, "short_cot": self.short_cot_prompt,
            "explicit_cot": self.explicit_cot_prompt}[self.guide_reasoning_mode]

  def guide_tokens(self) -> int:
    """New tokens of the guide's pass (an answer, or a CoT)."""
    return self.max_new_tokens if self.guide_reasoning_mode == "none" else self.guide_max_new_tokens
