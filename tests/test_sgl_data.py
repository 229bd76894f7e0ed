"""SGL data and runners: TextVQA reader (real layout fixture), the InternVL / SGL jsonl +
annotation layout, the cached jsonl form, case-list matching (configured / another dataset /
none, before ``limit``), resumable runs keyed by their settings and the stats files; bad rows,
annotations and case ids named."""

import json
import os

import numpy as np
import pytest

from jaxvlm.data.textvqa import (read_internvl_vqa, read_textvqa, read_vqa_jsonl,
                                 write_vqa_jsonl)
from jaxvlm.data.vqa import load_image, read_vqa
from jaxvlm.errors import ConfigError, DataFileError, MissingFileError
from jaxvlm.methods import sgl
from jaxvlm.methods.sgl import runner
from jaxvlm.runcache import RunCache

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
TEXTVQA = os.path.join(FIX, "textvqa", "TextVQA_0.5.1_val.json")
TEXTVQA_IMAGES = os.path.join(FIX, "textvqa", "train_images")


def _vqav2():
  v = os.path.join(FIX, "vqa")
  return read_vqa(os.path.join(v, "v2_OpenEnded_mscoco_val2014_questions.json"),
                  os.path.join(v, "v2_mscoco_val2014_annotations.json"), os.path.join(v, "images"))


def test_textvqa_reader_and_jsonl_round_trip(tmp_path):
  records = read_textvqa(TEXTVQA, TEXTVQA_IMAGES)
  assert [r.question_id for r in records] == [34602, 34603, 34604]
  assert records[0].answer == "nous les gosses" and len(records[0].answers) == 10
  assert load_image(records[2]).shape == (10, 28, 3)
  assert len(read_textvqa(TEXTVQA, TEXTVQA_IMAGES, limit=1)) == 1
  path = str(tmp_path / "cache" / "textvqa_val.jsonl")
  write_vqa_jsonl(records, path)
  back = read_vqa_jsonl(path)
  assert [(r.question_id, r.question, r.answers, r.image_path) for r in back] == [
      (r.question_id, r.question, r.answers, r.image_path) for r in records]
  with pytest.raises(MissingFileError, match="image of question 34602"):
    read_textvqa(TEXTVQA, str(tmp_path))
  (tmp_path / "bad.jsonl").write_text('{"question_id": 1}\n')
  with pytest.raises(DataFileError, match="line 1"):
    read_vqa_jsonl(str(tmp_path / "bad.jsonl"))


def test_case_list_detects_its_dataset(tmp_path):
  datasets = {"textvqa": read_textvqa(TEXTVQA, TEXTVQA_IMAGES), "vqav2": _vqav2()}
  vqav2_cases = tmp_path / "on_correct_off_wrong_nontrunc.json"
  vqav2_cases.write_text(json.dumps([{"question_id": 9001, "question": "How many forks are there?"},
                                     {"question_id": 42000}]))
  got = runner.match_case_list(str(vqav2_cases), datasets, "vqav2")
  assert [r.question_id for r in got] == [9001, 42000]
  with pytest.raises(ConfigError, match=r"case_list.*matches \['vqav2'\]"):
    runner.match_case_list(str(vqav2_cases), datasets, "textvqa")
  none = tmp_path / "none.json"
  none.write_text(json.dumps({"cases": [{"question_id": 34602, "question": "other text?"}]}))
  with pytest.raises(ConfigError, match="case_list.*matches no loaded dataset"):
    runner.match_case_list(str(none), datasets, "textvqa")
  missing = tmp_path / "missing.json"
  missing.write_text(json.dumps([{"question_id": 34602}, {"question_id": 777}]))
  with pytest.raises(ConfigError, match=r"case ids not in 'textvqa': \[777\]"):
    runner.match_case_list(str(missing), datasets, "textvqa")


def _internvl_files(tmp_path, rows=None, annotated=None):
  """SGL's TextVQA val layout from the fixture: jsonl (single answer, image path under the data
  root) + VQA-format annotation json."""
  records = read_textvqa(TEXTVQA, TEXTVQA_IMAGES)
  root = tmp_path / "InternVL"
  (root / "data" / "textvqa").mkdir(parents=True, exist_ok=True)
  rows = rows if rows is not None else [
      {"question_id": r.question_id, "question": r.question, "answer": r.answer,
       "image": os.path.relpath(r.image_path, FIX).replace("textvqa/", "data/textvqa/")}
      for r in records]
  jsonl = root / "data" / "textvqa" / "textvqa_val.jsonl"
  jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
  ann = root / "data" / "textvqa" / "textvqa_val_annotations.json"
  ann.write_text(json.dumps({"annotations": [
      {"question_id": r.question_id, "answers": [{"answer": a} for a in r.answers]}
      for r in records if annotated is None or r.question_id in annotated]}))
  images = root / "data" / "textvqa" / "train_images"
  if not images.exists():
    images.symlink_to(TEXTVQA_IMAGES)
  return str(jsonl), str(ann), str(root), records


def test_internvl_layout_reader(tmp_path):
  jsonl, ann, root, records = _internvl_files(tmp_path)
  got = read_internvl_vqa(jsonl, ann, root)
  assert [(r.question_id, r.question, r.answers, r.answer) for r in got] == [
      (r.question_id, r.question, r.answers, r.answer) for r in records]
  assert [load_image(r).shape for r in got] == [load_image(r).shape for r in records]
  assert len(read_internvl_vqa(jsonl, ann, root, limit=2)) == 2
  rows = [{"question_id": 34602, "question": "q?", "image": "x.jpg"}]
  jsonl, ann, root, _ = _internvl_files(tmp_path, rows=rows)
  with pytest.raises(DataFileError, match=r"textvqa_val.jsonl.*line 1 lacks 'answer'"):
    read_internvl_vqa(jsonl, ann, root)
  jsonl, ann, root, _ = _internvl_files(tmp_path, annotated={34602, 34603})
  with pytest.raises(DataFileError, match=r"annotations.json.*no annotation of question 34604"):
    read_internvl_vqa(jsonl, ann, root)


def test_load_samples_matches_the_case_list_before_limit(tmp_path):
  from jaxvlm.config import load_config
  from jaxvlm.run import experiment_module
  jsonl, ann, root, _ = _internvl_files(tmp_path)
  exp = experiment_module("shared_vision")
  c = load_config("configs/sgl.py:tiny")
  c.data.update(source="internvl", jsonl=jsonl, annotations=ann, data_root=root, limit=1,
                dataset="textvqa")
  cases = tmp_path / "cases.json"
  cases.write_text(json.dumps([{"question_id": 34604}, {"question_id": 34603}]))
  c.data.case_list = str(cases)
  assert [s.question_id for s in exp.load_samples(c)] == [34604]  # matched whole, then limit
  c.data.limit = 0
  assert [s.question_id for s in exp.load_samples(c)] == [34604, 34603]
  v = os.path.join(FIX, "vqa")
  c.data.update(source="vqa",
                questions=os.path.join(v, "v2_OpenEnded_mscoco_val2014_questions.json"),
                annotations=os.path.join(v, "v2_mscoco_val2014_annotations.json"),
                image_dir=os.path.join(v, "images"), case_list="")
  assert [s.question_id for s in exp.load_samples(c)] == [r.question_id for r in _vqav2()]


def test_run_resumes_and_writes_files(tmp_path):
  samples = read_textvqa(TEXTVQA, TEXTVQA_IMAGES)
  calls = []

  def batch_fn(batch, step):
    calls.append([s.question_id for s in batch])
    if len(calls) == 2 and step == 34604:
      raise KeyboardInterrupt  # the run is killed after its first batch
    return [{"question_id": s.question_id, "question": s.question, "answers": list(s.answers),
             "prediction": s.answer, "small_answer": "x", "large_answer": s.answer,
             "exited": False, "confidence": 0.5, "consistency": 0.5, "score": 0.5,
             "num_visual": 4, "num_kept": 2, "distribution": [1.0, 2.0, 3.0, step % 7 + 1.0]}
            for s in batch]

  cache = RunCache(str(tmp_path))
  run = lambda settings: runner.run_samples("run_a", cache, settings, samples, batch_fn,
                                            batch_size=2, num_visual=lambda s: 4)
  with pytest.raises(KeyboardInterrupt):
    run({"keep": 0.4})
  summary = run({"keep": 0.4})
  assert calls == [[34602, 34603], [34604, 34604], [34604, 34604]]  # padded, not redone
  assert summary["accuracy"] == 1.0 and summary["n"] == 3 and summary["exit_share"] == 0.0
  folder = summary["folder"]
  results = json.loads(open(os.path.join(folder, "results.json")).read())
  assert [r["question_id"] for r in results] == [34602, 34603, 34604]
  stats = os.path.join(folder, "stats.json")
  np.testing.assert_allclose(np.sum(json.loads(open(stats).read())["distributions"], 1), 1.0)
  assert json.loads(open(os.path.join(folder, "summary.json")).read()) == summary
  # another setting: a folder of its own, computed anew, the first run's files untouched
  before = open(os.path.join(folder, "results.json")).read()
  other = run({"keep": 0.09})
  assert other["folder"] != folder and len(calls) == 5
  assert open(os.path.join(folder, "results.json")).read() == before
  assert run({"keep": 0.4})["folder"] == folder and len(calls) == 5  # reused, not recomputed
  out = runner.compare_stats(stats, stats, top_k=2)
  assert out["avg_l1"] == 0.0 and out["changed_small_answer_count"] == 0
  assert sgl.compare_distributions is runner.compare_distributions


def test_warm_batches_need_equal_visual_counts_and_program_shapes(tmp_path):
  """A batch whose decoder ran on another number of rows (early exit) compiled anew: not warm."""
  samples = read_textvqa(TEXTVQA, TEXTVQA_IMAGES)
  rows, seconds = iter([4, 4, 2]), iter([9.0, 2.0, 7.0])

  def batch_fn(batch, step):
    shape, t = next(rows), next(seconds)
    return [{"question_id": s.question_id, "question": s.question, "answers": list(s.answers),
             "prediction": s.answer, "small_answer": "x", "large_answer": s.answer,
             "exited": False, "confidence": 0.5, "consistency": 0.5, "score": 0.5,
             "num_visual": 4, "num_kept": 2, "distribution": [1.0], "seconds": {"decoder": t},
             "program_shape": shape} for s in batch]

  summary = runner.run_samples("run_w", RunCache(str(tmp_path)), {}, samples, batch_fn,
                               batch_size=1, num_visual=lambda s: 4)
  results = json.loads(open(os.path.join(summary["folder"], "results.json")).read())
  assert [r["warm"] for r in results] == [False, True, False]
  assert summary["warm_samples"] == 1 and summary["warm_seconds_per_sample"] == {"decoder": 2.0}
  assert summary["seconds_per_sample"] == {"decoder": 6.0}


def test_compare_stats_equals_compare_distributions(tmp_path):
  rng = np.random.default_rng()
  p, q = rng.random((6, 16)), rng.random((6, 16))
  small = [["a", "b", "c", "d", "e", "f"], ["a", "x", "c", "d", "y", "f"]]
  large = [["1", "2", "3", "4", "5", "6"], ["1", "2", "3", "0", "5", "6"]]
  for name, d, s, l, ids in (("p", p, small[0], large[0], range(6)),
                             ("q", q[::-1], small[1][::-1], large[1][::-1], range(5, -1, -1))):
    (tmp_path / f"{name}_stats.json").write_text(json.dumps({
        "question_ids": list(ids), "distributions": d.tolist(), "small_answers": s,
        "large_answers": l}))
  got = runner.compare_stats(str(tmp_path / "p_stats.json"), str(tmp_path / "q_stats.json"), 4)
  want = sgl.compare_distributions(p, q, 4, answers_p=list(zip(small[0], large[0])),
                                   answers_q=list(zip(small[1], large[1])))
  assert got.keys() == want.keys() and got["changed_small_answer_count"] == 2
  np.testing.assert_allclose([got[k] for k in want], [want[k] for k in want], rtol=1e-9)
