"""LLaVA instruction data (the ``llava_v1_5_mix665k.json`` layout) as chat conversations.

A file is a JSON list of records ``{"id", "image", "conversations": [{"from": "human", "value":
"<image>\\n..."}, {"from": "gpt", "value": ...}, ...]}``; ``image`` is a path relative to the image
folder (absent for text-only records). Turns alternate human / gpt, starting with a human turn;
the ``<image>`` placeholders of the human turns must number the record's images (0 or 1).

:func:`read_llava_instruct` reads and checks a file; :func:`training_examples` turns each assistant
turn into one ``(conversation, answer)`` pair: every earlier turn (the image in the turn that held
``<image>``) is the context and the loss falls on that answer only, so every assistant turn of a
multi-turn record is trained on, with what preceded it. :func:`write_llava_instruct` writes
samples (e.g. the synthetic VQA scenes, several questions per image) in this layout.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from jaxvlm import io
from jaxvlm.data import records as rec
from jaxvlm.errors import DataFileError, MissingFileError

IMAGE = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}


@dataclasses.dataclass(frozen=True)
class InstructRecord:
  id: str
  image_path: str | None  # absolute (image folder joined), None for text-only records
  turns: tuple[tuple[str, str], ...]  # (role "user" | "assistant", text without <image>)
  image_turn: int  # index of the user turn that held <image> (-1: none)


def _strip_image(text: str) -> str:
  """The turn's text without its ``<image>`` placeholder and the newline beside it."""
  return text.replace(IMAGE + "\n", "").replace("\n" + IMAGE, "").replace(IMAGE, "").strip()


def _record(r, i: int, path: str, image_folder: str) -> InstructRecord:
  where = f"record {i}"
  rec.require(r, ("id", "conversations"), path, where)
  rid = str(r["id"])
  where = f"record {i} (id {rid!r})"
  turns = r["conversations"]
  if not isinstance(turns, list) or not turns:
    raise DataFileError(path, f"{where}: 'conversations' is {turns!r:.60}, expected a non-empty "
                              "list of {\"from\", \"value\"} turns")
  out, image_turn, placeholders = [], -1, 0
  for t, turn in enumerate(turns):
    rec.require(turn, ("from", "value"), path, f"{where}, turn {t}")
    expected = "human" if t % 2 == 0 else "gpt"
    if turn["from"] != expected:
      raise DataFileError(path, f"{where}, turn {t}: from {turn['from']!r}, expected "
                                f"{expected!r} (turns alternate human / gpt)")
    text = rec.text(turn, "value", path, f"{where}, turn {t}")
    count = text.count(IMAGE)
    if count and expected == "gpt":
      raise DataFileError(path, f"{where}, turn {t}: an assistant turn holds {IMAGE}")
    if count:
      image_turn = t
    placeholders += count
    out.append((ROLES[expected], _strip_image(text)))
  if len(out) % 2:
    raise DataFileError(path, f"{where}: ends with a human turn, expected a gpt answer last")
  images = 1 if r.get("image") else 0
  if placeholders != images:
    raise DataFileError(path, f"{where}: {placeholders} {IMAGE} placeholder(s) in its "
                              f"conversation, expected {images} (one per image; the record "
                              f"{'has' if images else 'has no'} 'image')")
  image = None
  if images:
    image = os.path.join(image_folder, str(r["image"]))
    if not os.path.exists(image):
      raise MissingFileError(image, f"image of {where} in {path}")
  return InstructRecord(rid, image, tuple(out), image_turn)


def read_llava_instruct(path: str, image_folder: str, limit: int | None = None
                        ) -> list[InstructRecord]:
  """The first ``limit`` (all when None) records of the LLaVA instruction file ``path``."""
  data = rec.read_json(path, "LLaVA instruction json")
  if not isinstance(data, list):
    raise DataFileError(path, f"got a JSON {type(data).__name__}, expected a list of records")
  return [_record(r, i, path, image_folder) for i, r in enumerate(data[:limit])]


def conversation(record: InstructRecord, turns: int) -> list[dict]:
  """HF chat messages of the record's first ``turns`` turns (the image item first in the turn
  that held ``<image>``)."""
  messages = []
  for t, (role, text) in enumerate(record.turns[:turns]):
    content = [{"type": "text", "text": text}]
    if t == record.image_turn:
      content.insert(0, {"type": "image", "image": record.image_path})
    messages.append({"role": role, "content": content})
  return messages


def training_examples(records: Sequence[InstructRecord]) -> list[tuple[list[dict], str]]:
  """``(conversation up to a user turn, the assistant answer to it)`` for every assistant turn."""
  return [(conversation(r, t), r.turns[t][1]) for r in records
          for t in range(1, len(r.turns), 2)]


def write_llava_instruct(path: str, image_folder: str,
                         items: Sequence[tuple[str, "object", Sequence[tuple[str, str]]]]
                         ) -> None:
  """Writes ``items`` = ``(id, uint8 [H, W, 3] image, [(question, answer), ...])`` as a LLaVA
  instruction file (one multi-turn record per image, ``<image>`` in the first question) with the
  images as ``<image_folder>/<id>.png``."""
  from PIL import Image
  os.makedirs(image_folder, exist_ok=True)
  out = []
  for rid, image, qa in items:
    name = f"{rid}.png"
    with io.atomic_open(os.path.join(image_folder, name), "wb") as f:
      Image.fromarray(image).save(f, format="PNG")
    turns = []
    for k, (q, a) in enumerate(qa):
      turns += [{"from": "human", "value": (IMAGE + "\n" if k == 0 else "") + q},
                {"from": "gpt", "value": a}]
    out.append({"id": rid, "image": name, "conversations": turns})
  io.write_json(path, out)


__all__ = ["IMAGE", "InstructRecord", "conversation", "read_llava_instruct", "training_examples",
           "write_llava_instruct"]
