"""A run's files (JSON, text, scalars, eval results) are written atomically by process 0 only."""
import json
import os

import jax
import numpy as np
import pytest

from prompt_tuning_jax.evaluation import evaluator
from prompt_tuning_jax.train import outputs, summaries


def write_everything(directory):
  outputs.write_json(os.path.join(directory, "a.json"), {"x": np.float32(0.5), "y": np.arange(2)})
  outputs.write_text(os.path.join(directory, "config.gin"), "X = 1\n")
  writer = summaries.SummaryWriter(directory)
  writer.scalars("train", 1, {"loss": np.float32(0.25)})
  writer.close()
  evaluator.write_results(os.path.join(directory, "eval"), [{"prediction": np.int64(1)}], {"accuracy": 100.0})


def test_process_zero_writes_every_file_atomically(tmp_path):
  write_everything(str(tmp_path))
  assert json.load(open(tmp_path / "a.json")) == {"x": 0.5, "y": [0, 1]}
  assert (tmp_path / "config.gin").read_text() == "X = 1\n"
  assert [json.loads(line) for line in open(tmp_path / "metrics.jsonl")] == [{"split": "train", "step": 1, "loss": 0.25}]
  assert os.listdir(tmp_path / "train")  # the TensorBoard event file
  assert json.load(open(tmp_path / "eval" / "metrics.json")) == {"accuracy": 100.0}
  assert not [name for _, _, names in os.walk(tmp_path) for name in names if name.endswith(".tmp")]


def test_a_resumed_run_drops_what_an_earlier_attempt_logged_after_its_checkpoint(tmp_path):
  writer = summaries.SummaryWriter(str(tmp_path))
  for step in range(1, 6):  # an attempt that stopped after step 5, its last checkpoint at step 3
    writer.scalars("train", step, {"loss": 1.0})
  writer.scalars("eval", 3, {"accuracy": 50.0})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"split": "train", "st')  # killed in the middle of a write
  writer = summaries.SummaryWriter(str(tmp_path), start_step=3)
  writer.scalars("train", 4, {"loss": 0.5})
  writer.close()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [(r["split"], r["step"], r.get("loss")) for r in rows] == [
      ("train", 1, 1.0), ("train", 2, 1.0), ("train", 3, 1.0), ("eval", 3, None), ("train", 4, 0.5)]
  summaries.SummaryWriter(str(tmp_path)).close()  # a run that starts over keeps nothing
  assert open(tmp_path / "metrics.jsonl").read() == ""


def test_other_processes_of_a_multi_host_run_write_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  write_everything(str(tmp_path))
  assert [name for _, _, names in os.walk(tmp_path) for name in names] == []


def test_a_failed_write_keeps_the_previous_file(tmp_path):
  path = str(tmp_path / "a.json")
  outputs.write_json(path, {"step": 1})
  with pytest.raises(ValueError):  # json: circular reference (np.asarray(object()) is the object again)
    outputs.write_json(path, {"step": object()})
  assert json.load(open(path)) == {"step": 1}
  with pytest.raises(UnicodeEncodeError):  # fails inside the write, after the file was opened
    outputs.write_text(path, '{"step": 2, "note": "\ud800"}')
  assert json.load(open(path)) == {"step": 1}  # a write in place would have truncated it
