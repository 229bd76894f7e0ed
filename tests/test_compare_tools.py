"""compare-checkpoints / compare-indices: exact counts and values, mismatches, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxvlm import cli
from jaxvlm.errors import CheckpointError, DataFileError, MissingFileError
from jaxvlm.tools import compare_checkpoints as cc
from jaxvlm.tools import compare_indices as ci
from jaxvlm.training import Checkpointer


def _save(directory, params, step=1):
  ckpt = Checkpointer(str(directory), every=1, keep=2, async_save=False)
  ckpt.save(step, {"params": params, "rng": np.zeros(2, np.uint32)}, {"step": step})
  ckpt.wait()
  return str(directory)


@pytest.fixture
def pair(tmp_path):
  rng = np.random.default_rng()
  a = {"w": rng.normal(size=(6, 5)).astype(np.float32), "b": rng.normal(size=(7,)).astype(np.float32),
       "only_a": np.ones(3, np.float32), "s": np.zeros((2, 2), np.float32)}
  b = {k: v.copy() for k, v in a.items() if k != "only_a"}
  b["w"][1, 2] += 0.5
  b["w"][4, 0] -= 2e-3
  b["b"][3] += 0.25
  b["s"] = np.zeros((3, 2), np.float32)
  b["only_b"] = np.ones(2, np.float32)
  return a, b, _save(tmp_path / "A", a), _save(tmp_path / "B", b, step=3)


def test_counts_and_values_are_exact(pair):
  a, b, path_a, path_b = pair
  report = cc.compare(cc.load_params(path_a), cc.load_params(path_b))
  rows = {r["name"]: r for r in report["params"]}
  assert rows["w"]["n_differ"] == 2 and rows["b"]["n_differ"] == 1
  np.testing.assert_allclose(rows["w"]["max_abs_diff"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(rows["w"]["mean_abs_diff"], (0.5 + 2e-3) / 30, rtol=1e-5)
  np.testing.assert_allclose(rows["b"]["relative_diff"], 0.25 / np.linalg.norm(a["b"]), rtol=1e-5)
  o = report["overall"]
  assert (o["n_differ"], o["num_elements"], o["params_differ"]) == (3, 37, 2)
  assert report["only_in_a"] == ["only_a"] and report["only_in_b"] == ["only_b"]
  assert report["shape_mismatch"] == [{"name": "s", "shape_a": [2, 2], "shape_b": [3, 2]}]
  strict = cc.compare(cc.load_params(path_a), cc.load_params(path_b), atol=1e-2)
  assert strict["overall"]["n_differ"] == 2  # the 2e-3 change is within tolerance


def test_cli_table_and_json(pair, tmp_path, capsys):
  _, _, path_a, path_b = pair
  out = tmp_path / "report.json"
  assert cli.main(["compare-checkpoints", path_a, f"{path_b}/3", "--json", str(out)]) == 0
  text = capsys.readouterr().out
  assert "3 / 37" in text and "shape mismatch: s" in text and "only in A (1): only_a" in text
  assert json.loads(out.read_text())["overall"]["n_differ"] == 3


def test_relative_checkpoint_paths(pair, tmp_path, monkeypatch):
  a, _, _, _ = pair
  monkeypatch.chdir(tmp_path)  # Orbax alone refuses relative paths
  np.testing.assert_array_equal(cc.load_params("A")["w"], a["w"])
  assert cli.main(["compare-checkpoints", "A", "B/3"]) == 0


def test_bad_paths_and_trees(pair, tmp_path, capsys):
  _, _, path_a, _ = pair
  with pytest.raises(MissingFileError, match="does-not-exist"):
    cc.load_params(str(tmp_path / "does-not-exist"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match="not an Orbax checkpoint"):
    cc.load_params(str(tmp_path / "empty"))
  with pytest.raises(CheckpointError, match="step 7 not among"):
    cc.load_params(path_a, step=7)
  other = _save(tmp_path / "C", {"x": np.ones(4, np.float32)})
  with pytest.raises(CheckpointError, match="no parameter with the same name"):
    cc.compare(cc.load_params(path_a), cc.load_params(other))
  assert cli.main(["compare-checkpoints", path_a, str(tmp_path / "nope")]) == 2
  assert "nope" in capsys.readouterr().err


def test_compare_indices(tmp_path, capsys):
  a = {"q1": [3, 7], "q2": [1, 2], "q3": [5, 9], "q4": [0]}
  b = [{"id": "q1", "indices": [3, 7]}, {"id": "q2", "indices": [2, 1]},
       {"id": "q3", "indices": [5, 8]}, {"id": "q5", "indices": [4]}]
  (tmp_path / "a.json").write_text(json.dumps(a))
  (tmp_path / "b.json").write_text(json.dumps({"results": b}))
  report = ci.compare(ci.load_selections(str(tmp_path / "a.json")),
                      ci.load_selections(str(tmp_path / "b.json")))
  assert (report["num_samples"], report["identical"], report["different"]) == (3, 1, 2)
  assert report["identical_share"] == pytest.approx(1 / 3)
  assert report["same_set_share"] == pytest.approx(2 / 3)
  diffs = {d["sample"]: d for d in report["differences"]}
  assert diffs["q2"]["positions_differ"] == [0, 1] and diffs["q3"]["positions_differ"] == [1]
  assert diffs["q3"]["set_overlap"] == pytest.approx(1 / 3)
  assert report["only_in_a"] == ["q4"] and report["only_in_b"] == ["q5"]
  (tmp_path / "c.json").write_text(json.dumps([[3, 7], [1, 2]]))
  assert cli.main(["compare-indices", str(tmp_path / "c.json"), str(tmp_path / "c.json")]) == 0
  assert "identical: 2 (100.00%)" in capsys.readouterr().out
  assert cli.main(["compare-indices", str(tmp_path / "a.json"), str(tmp_path / "x.json")]) == 2


def _largest_file(folder):
  files = [p for p in folder.rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("target", ["data", "manifest.ocdbt", "_METADATA"])
def test_corrupt_checkpoint_file_is_named_in_one_line(tmp_path, capsys, target):
  like = {"params": {"w": np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)},
          "rng": np.zeros(2, np.uint32)}
  path = _save(tmp_path / "A", like["params"])
  state = tmp_path / "A" / "1" / "state"
  bad = _largest_file(state / "ocdbt.process_0") if target == "data" else state / target
  data = bad.read_bytes()
  bad.write_bytes(data[: len(data) // 2] + b"\x00garbage")
  with pytest.raises(CheckpointError, match=f"checkpoint file '{bad}' is corrupt or truncated"):
    cc.load_params(path)
  ckpt = Checkpointer(path)
  with pytest.raises(CheckpointError, match=f"checkpoint file '{bad}'"):
    ckpt.restore(1, like)
  ckpt.close()
  assert cli.main(["compare-checkpoints", path, path]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and str(bad) in err


def test_compare_indices_refuses_floats_and_names_truncated_files(tmp_path, capsys):
  (tmp_path / "a.json").write_text(json.dumps({"q1": [1, 2]}))
  (tmp_path / "f.json").write_text(json.dumps({"q1": [1.7, 2.2]}))
  with pytest.raises(DataFileError, match=r"f\.json: sample q1: indices \[1\.7, 2\.2\], expected"):
    ci.load_selections(str(tmp_path / "f.json"))
  (tmp_path / "r.json").write_text(json.dumps([{"id": "q1", "indices": [1, True]}]))
  with pytest.raises(DataFileError, match=r"r\.json: sample q1: indices \[1, true\]|\[1, True\]"):
    ci.load_selections(str(tmp_path / "r.json"))
  (tmp_path / "t.json").write_text(json.dumps({"q1": [1, 2], "q2": [3, 4]})[:20])
  assert cli.main(["compare-indices", str(tmp_path / "a.json"), str(tmp_path / "t.json")]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and f"{tmp_path / 't.json'}: malformed JSON at line 1" in err
  assert cli.main(["compare-indices", str(tmp_path / "a.json"), str(tmp_path / "f.json")]) == 2
  assert "expected a list of integers" in capsys.readouterr().err
