"""SGL data and runners: TextVQA reader (real layout fixture), the cached jsonl form, case-list
matching (configured / another dataset / none), resumable runs and the stats files."""

import json
import os

import numpy as np
import pytest

from jaxvlm.data.textvqa import read_textvqa, read_vqa_jsonl, write_vqa_jsonl
from jaxvlm.data.vqa import load_image, read_vqa
from jaxvlm.errors import ConfigError, DataFileError, MissingFileError
from jaxvlm.methods import sgl
from jaxvlm.methods.sgl import runner

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

  run = lambda: runner.run_samples("run_a", str(tmp_path), samples, batch_fn, batch_size=2,
                                   num_visual=lambda s: 4)
  with pytest.raises(KeyboardInterrupt):
    run()
  summary = run()
  assert calls == [[34602, 34603], [34604, 34604], [34604, 34604]]  # padded, not redone
  assert summary["accuracy"] == 1.0 and summary["n"] == 3 and summary["exit_share"] == 0.0
  results = json.loads((tmp_path / "run_a.json").read_text())
  assert [r["question_id"] for r in results] == [34602, 34603, 34604]
  stats = json.loads((tmp_path / "run_a_stats.json").read_text())
  np.testing.assert_allclose(np.sum(stats["distributions"], 1), 1.0)
  assert json.loads((tmp_path / "run_a.summary.json").read_text()) == summary
  out = runner.compare_stats(str(tmp_path / "run_a_stats.json"),
                             str(tmp_path / "run_a_stats.json"), top_k=2)
  assert out["avg_l1"] == 0.0 and out["changed_small_answer_count"] == 0
  assert sgl.compare_distributions is runner.compare_distributions


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
