"""Evaluation of an :class:`AdaLlava` at one budget: VQA accuracy, exact match, FLOPs, latency.

:func:`prepare_batches` encodes the questions once (left-padded prompts of one length, the last
batch padded by repeating its last row); :func:`evaluate_budget` runs, per batch,
:func:`~jaxvlm.methods.adallava.budget_inputs` (controller, K-of-N selection, latency token) and
the one :func:`~jaxvlm.generation.generate`, then scores every answer with the official VQA
accuracy and exact match (both after the official answer normalisation). Per sample it logs the
lmms-eval fields (``doc_id``, ``doc``, ``target``, ``resps``, ``filtered_resps``) and the budget
diagnosis of seed 004: ``K``, executed layers (and units: KV-head groups, ``G`` per whole layer),
prompt length, ``num_generated`` (up to and incl. EOS), ``gen_len`` (answer tokens before EOS),
the first token and FLOPs (:mod:`.flops`; head granularity: the row's own units per layer).
Latency is the wall time of the whole budgeted pipeline on the first batch: ``latency_s`` the
best of ``latency_repeats`` runs (robust to other processes on a shared machine), the median, and
``cpu_time_s`` the best process CPU time (all threads; what contention cannot inflate).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any, Sequence

import jax
import numpy as np

from jaxvlm import io
from jaxvlm.data import vlm_batches
from jaxvlm.eval import normalize_answer, vqa_accuracy
from jaxvlm.generation import generate
from jaxvlm import frozen
from jaxvlm.methods.adallava.flops import flops_per_sample
from jaxvlm.methods.adallava.modeling import (AdaLlava, budget_inputs, check_budget,
                                              unit_plan, visual_keep_count)


def prepare_batches(model: AdaLlava, tokenizer, records: Sequence[Any],
                    batch_size: int) -> list[tuple[dict, int]]:
  """``[(batch, valid rows)]`` of generation batches (:func:`vlm_batches.build_vlm_batch`)."""
  fmt = vlm_batches.VLMPromptFormat.from_model(model.vlm, tokenizer,
                                               vlm_batches.image_of(records[0]).shape[0])
  length = max(len(vlm_batches.encode_prompt(fmt, tokenizer, r)[0]) for r in records)
  out = []
  for start in range(0, len(records), batch_size):
    chunk = list(records[start:start + batch_size])
    valid = len(chunk)
    chunk += [chunk[-1]] * (batch_size - valid)
    out.append((vlm_batches.build_vlm_batch(chunk, tokenizer, model.vlm, seq_len=length,
                                            with_answer=False, fmt=fmt), valid))
  return out


def _run(model, batch, budget, length, max_new_tokens, tokenizer):
  px = vlm_batches.generation_inputs(model.vlm, batch)["pixel_values"]
  inp = budget_inputs(model, batch["input_ids"], batch["attention_mask"], px, budget,
                      length=length)
  out = generate(model, inp.input_ids, inp.attention_mask, max_new_tokens, temperature=0.0,
                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                 **inp.generate_kwargs())
  return inp, jax.block_until_ready(out)


def _gen_len(row: np.ndarray, eos: int) -> int:
  hits = np.nonzero(row == eos)[0]
  return int(hits[0]) if len(hits) else len(row)


def evaluate_budget(model: AdaLlava, tokenizer, records: Sequence[Any],
                    batches: list[tuple[dict, int]], budget: float, *, max_new_tokens: int,
                    latency_repeats: int = 3) -> tuple[dict, list[dict]]:
  """(metrics, per-sample records) of greedy answers at ``budget`` (``records`` in the order of
  ``batches``, e.g. :class:`~jaxvlm.data.vqa.VQARecord` or synthetic samples)."""
  check_budget(budget, 1)
  n = model.vlm.config.tokens_per_image
  k = int(visual_keep_count(budget, n))
  length = batches[0][0]["input_ids"].shape[1] - n + k + 1  # K visual tokens + latency token
  text_cfg = model.vlm.config.text
  with frozen.freeze(model):  # one graph split for every call below
    samples = []
    for batch, valid in batches:
      inp, out = _run(model, batch, budget, length, max_new_tokens, tokenizer)
      plan = unit_plan(model, inp)
      units = plan.sum(-1) if plan.ndim == 3 else None  # [B, L] units per layer
      layers = (plan.max(-1) if plan.ndim == 3 else plan).sum(1)
      new = np.asarray(out.new_tokens)
      num = np.asarray(out.num_generated)
      prompt_lens = inp.attention_mask.sum(1)
      for r in range(valid):
        rec = records[len(samples)]
        pred = tokenizer.decode(new[r]).strip()
        flops = flops_per_sample(text_cfg, int(prompt_lens[r]), int(layers[r]), int(num[r]),
                                 None if units is None else units[r])
        samples.append({
            "doc_id": len(samples),
            "doc": {"question_id": int(rec.question_id), "question": rec.question,
                    "answers": list(rec.answers), "question_type": rec.question_type},
            "target": rec.answer, "resps": [[pred]], "filtered_resps": [pred],
            "exact_match": float(normalize_answer(pred) == normalize_answer(rec.answer)),
            "vqa_accuracy": vqa_accuracy(pred, rec.answers),
            "budget": float(budget), "num_keep": int(inp.num_keep[r]), "layers": int(layers[r]),
            "units": int(layers[r] * text_cfg.num_key_value_heads if units is None
                         else units[r].sum()),
            "prompt_len": int(prompt_lens[r]), "num_generated": int(num[r]),
            "gen_len": _gen_len(new[r], tokenizer.eos_token_id), "first_token": int(new[r, 0]),
            "flops": flops["total"], "flops_prefill": flops["prefill"]})
    times, cpu = [], []
    for _ in range(latency_repeats):
      t0, c0 = time.perf_counter(), time.process_time()
      _run(model, batches[0][0], budget, length, max_new_tokens, tokenizer)
      times.append(time.perf_counter() - t0)
      cpu.append(time.process_time() - c0)
  mean = lambda key: float(np.mean([s[key] for s in samples]))
  metrics = {"budget": float(budget), "num_keep": k, "layers": mean("layers"),
             "units": mean("units"), "groups": text_cfg.num_key_value_heads,
             "exact_match": mean("exact_match"), "vqa_accuracy": mean("vqa_accuracy"),
             "flops": mean("flops"), "gen_len": mean("gen_len"),
             "num_generated": mean("num_generated"),
             "empty_answers": float(np.mean([not s["resps"][0][0] for s in samples])),
             "first_token_eos": float(np.mean([s["first_token"] == tokenizer.eos_token_id
                                               for s in samples])),
             "latency_s": min(times) if times else float("nan"),
             "latency_median_s": statistics.median(times) if times else float("nan"),
             "cpu_time_s": min(cpu) if cpu else float("nan"),
             "latency_batch": batches[0][0]["input_ids"].shape[0]}
  return metrics, samples


def write_samples(path: str, samples: Sequence[dict]) -> None:
  """One JSON object per line (the lmms-eval ``*_samples_<task>.jsonl`` layout), atomically."""
  io.write_text(path, "".join(json.dumps(s) + "\n" for s in samples))
