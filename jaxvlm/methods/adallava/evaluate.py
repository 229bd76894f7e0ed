"""Evaluation of an :class:`AdaLlava` at one (latency budget, token budget) point, as lmms-eval's
VQAv2 task reports it.

Prompts are lmms-eval's VQAv2 prompt (the question, then ``"\\nAnswer the question using a single
word or phrase."``) in the folder's own chat template and processor
(:func:`jaxvlm.data.vlm_inputs.encode`, one user turn: the image, then the text).
:func:`prepare_batches` encodes the questions once (the last batch padded by repeating its last
row); :func:`evaluate_point` runs, per batch, :func:`~jaxvlm.methods.adallava.budget_inputs`
(controller, K-of-N selection, latency token) and the one :func:`~jaxvlm.generation.generate`.

Metrics: ``exact_match`` is lmms-eval's VQAv2 ``exact_match``, the official VQA accuracy
(``min(#matching annotators / 3, 1)`` averaged over the 10-choose-9 subsets, after the official
answer normalisation); ``strict_match`` is the project's stricter score (the normalised answer
equals the normalised majority answer). Per sample the lmms-eval fields (``doc_id``, ``doc``,
``target``, ``resps``, ``filtered_resps``, ``exact_match``) and the budget diagnosis of seed 004:
``K``, the layers / units the batch executed, prompt length, ``num_generated`` (up to and incl.
EOS), ``gen_len`` (answer tokens before EOS), the first token, FLOPs (prefill, every decode step,
total: :mod:`.flops` on the plan that executed, :func:`~jaxvlm.methods.adallava.executed_units`).
Latency is the wall time of the whole budgeted pipeline on the first batch: ``latency_s`` the best
of ``latency_repeats`` runs, the median, and ``cpu_time_s`` the best process CPU time.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any, Sequence

import jax
import numpy as np

from jaxvlm import frozen, io
from jaxvlm.data import vlm_inputs
from jaxvlm.eval import normalize_answer, vqa_accuracy
from jaxvlm.errors import ShapeError
from jaxvlm.eval.vqa_answers import vqa_conversation
from jaxvlm.generation import generate
from jaxvlm.generation.defaults import model_defaults
from jaxvlm.methods.adallava.flops import flops_per_sample
from jaxvlm.methods.adallava.modeling import (AdaLlava, budget_inputs, check_budget,
                                              executed_units, visual_keep_count)

LMMS_VQAV2_PROMPT = "Answer the question using a single word or phrase."


def lmms_vqav2_conversation(record: Any, shots=()) -> list[dict]:
  """lmms-eval's VQAv2 prompt as one user turn: the image, the question, the instruction."""
  return vqa_conversation(record, shots, instruction=LMMS_VQAV2_PROMPT)


def prepare_batches(processor, records: Sequence[Any], batch_size: int,
                    pad_to_multiple: int = 16) -> list[tuple[dict, int]]:
  """``[(encoded batch, valid rows)]`` of the questions (:func:`vlm_inputs.encode`)."""
  out = []
  for start in range(0, len(records), batch_size):
    chunk = list(records[start:start + batch_size])
    valid = len(chunk)
    chunk += [chunk[-1]] * (batch_size - valid)
    batch = vlm_inputs.encode(processor, [lmms_vqav2_conversation(r) for r in chunk],
                              pad_to_multiple=pad_to_multiple)
    if set(batch["images_per_row"].tolist()) != {1}:
      raise ShapeError(f"questions {start}..{start + valid - 1}: images per row",
                       batch["images_per_row"].tolist(), "one image per question")
    out.append((batch, valid))
  return out


def _stops(model: AdaLlava, tok) -> tuple[tuple[int, ...], int]:
  """(EOS ids, pad id) of the checkpoint's generation config, else of the tokenizer."""
  d = model_defaults(model.vlm)
  eos = tuple(d.eos_token_id) or (tok.eos_token_id,)
  pad = d.pad_token_id if d.pad_token_id is not None else (
      tok.pad_token_id if tok.pad_token_id is not None else eos[0])
  return eos, pad


def _run(model, batch, latency_budget, token_budget, max_new_tokens, stops):
  n = int(batch["visual_tokens"][0])
  k = int(visual_keep_count(token_budget, n))
  inp = budget_inputs(model, batch["input_ids"], batch["attention_mask"],
                      batch["pixel_values"], latency_budget=latency_budget,
                      token_budget=token_budget, length=batch["input_ids"].shape[1] - n + k + 1)
  eos, pad = stops
  out = generate(model, inp.input_ids, inp.attention_mask, max_new_tokens, temperature=0.0,
                 eos_token_id=list(eos), pad_token_id=pad, **inp.generate_kwargs())
  return inp, jax.block_until_ready(out)


def _gen_len(row: np.ndarray, eos: Sequence[int]) -> int:
  hits = np.nonzero(np.isin(row, eos))[0]
  return int(hits[0]) if len(hits) else len(row)


def evaluate_point(model: AdaLlava, processor, records: Sequence[Any],
                   batches: list[tuple[dict, int]], *, latency_budget: float,
                   token_budget: float, max_new_tokens: int, latency_repeats: int = 3
                   ) -> tuple[dict, list[dict]]:
  """(metrics, per-sample records) of greedy answers at one budget pair (``records`` in the
  order of ``batches``: :class:`~jaxvlm.data.vqa.VQARecord` or synthetic samples)."""
  check_budget(latency_budget, 1, "latency_budget")
  check_budget(token_budget, 1, "token_budget")
  tok = getattr(processor, "tokenizer", processor)
  stops = _stops(model, tok)
  text_cfg = model.vlm.config.text
  run = lambda batch: _run(model, batch, latency_budget, token_budget, max_new_tokens, stops)
  with frozen.freeze(model):  # one graph split for every call below
    samples = []
    for batch, valid in batches:
      inp, out = run(batch)
      units = executed_units(model, inp)  # [L]: what the batch ran
      new, num = np.asarray(out.new_tokens), np.asarray(out.num_generated)
      prompt_lens = inp.attention_mask.sum(1)
      for r in range(valid):
        rec = records[len(samples)]
        pred = tok.decode(new[r][:num[r]], skip_special_tokens=True).strip()
        flops = flops_per_sample(text_cfg, int(prompt_lens[r]), 0, int(num[r]),
                                 layer_units=units)
        accuracy = vqa_accuracy(pred, rec.answers)
        samples.append({
            "doc_id": len(samples),
            "doc": {"question_id": int(rec.question_id), "question": rec.question,
                    "answers": list(rec.answers), "question_type": rec.question_type},
            "target": rec.answer, "resps": [[pred]], "filtered_resps": [pred],
            "exact_match": accuracy,
            "strict_match": float(normalize_answer(pred) == normalize_answer(rec.answer)),
            "latency_budget": float(latency_budget), "token_budget": float(token_budget),
            "num_keep": int(inp.num_keep[r]), "layers": int((units > 0).sum()),
            "units": int(units.sum()), "prompt_len": int(prompt_lens[r]),
            "num_generated": int(num[r]), "gen_len": _gen_len(new[r], stops[0]),
            "first_token": int(new[r, 0]), "flops": flops["total"],
            "flops_prefill": flops["prefill"], "flops_decode": flops["decode"]})
    times, cpu = [], []
    for _ in range(latency_repeats):
      t0, c0 = time.perf_counter(), time.process_time()
      run(batches[0][0])
      times.append(time.perf_counter() - t0)
      cpu.append(time.process_time() - c0)
  mean = lambda key: float(np.mean([s[key] for s in samples]))
  nan = float("nan")
  metrics = {"latency_budget": float(latency_budget), "token_budget": float(token_budget),
             "num_keep": mean("num_keep"), "layers": mean("layers"), "units": mean("units"),
             "groups": text_cfg.num_key_value_heads, "exact_match": mean("exact_match"),
             "strict_match": mean("strict_match"), "flops": mean("flops"),
             "gen_len": mean("gen_len"), "num_generated": mean("num_generated"),
             "empty_answers": float(np.mean([not s["resps"][0][0] for s in samples])),
             "first_token_eos": float(np.mean([s["first_token"] in stops[0]
                                               for s in samples])),
             "latency_s": min(times) if times else nan,
             "latency_median_s": statistics.median(times) if times else nan,
             "cpu_time_s": min(cpu) if cpu else nan,
             "latency_batch": int(batches[0][0]["input_ids"].shape[0])}
  return metrics, samples


def write_samples(path: str, samples: Sequence[dict]) -> None:
  """One JSON object per line (the lmms-eval ``*_samples_<task>.jsonl`` layout), atomically."""
  io.write_text(path, "".join(json.dumps(s) + "\n" for s in samples))
