"""scripts/linear_probe.py on the real MiniLM and CB from the data dir, a few examples."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from prompt_tuning_jax.experiments import examples, linear_probe, training

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_probe_outputs_and_fit(tmp_path):
  out_dir = str(tmp_path)
  process = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "linear_probe.py"), "--tasks=bert_super_glue_cb",
       "--train_examples=32", "--eval_examples=24", "--probe_steps=300", f"--out_dir={out_dir}"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert process.returncode == 0, process.stderr[-3000:]
  payload = json.load(open(os.path.join(out_dir, "probe.json")))
  (result,) = payload["results"]
  assert (result["task"], result["train_examples"], result["eval_examples"]) == ("bert_super_glue_cb", 32, 24)
  dev_labels = examples.first_examples("bert_super_glue_cb", "validation", 64, 24)["labels"]
  assert result["majority"] == 100.0 * np.bincount(dev_labels).max() / 24
  # 32 examples in 384 dimensions are linearly separable: every probe fits its train rows.
  assert result["train_accuracy"] == {k: 100.0 for k in linear_probe.FEATURES}
  assert set(result["eval_accuracy"]) == set(linear_probe.FEATURES)
  assert all(0.0 <= v <= 100.0 for v in result["eval_accuracy"].values())
  assert set(result["budget_head"]) == {"1e-3", "1e-2", "1e-1"}
  assert all(0.0 <= v <= 100.0 for head in result["budget_head"].values() for v in head.values())
  assert "| bert_super_glue_cb | 32 |" in open(os.path.join(out_dir, "probe.md")).read()


@pytest.mark.slow
def test_boolq_is_probed_on_the_tables_split():
  """The shared data has no BoolQ train split: the probe reads the table's (val.jsonl's first rows / the rest)."""
  from prompt_tuning_jax import minilm  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import hf_bert  # pylint: disable=g-import-not-at-top
  model, params = hf_bert.load_hf_bert(minilm.minilm_dir())
  args = argparse.Namespace(length=32, train_examples=8, eval_examples=6, probe_steps=5, l2=1e-4, head_steps=2,
                            head_batch=4, head_lrs="1e-2")
  result = linear_probe.probe_task("bert_super_glue_boolq", args, model, params)
  assert (result["task"], result["train_examples"], result["eval_examples"]) == ("bert_super_glue_boolq", 8, 6)
  dev_labels = examples.first_examples(training.task_name("bert_super_glue_boolq"), "validation", 32, 6)["labels"]
  assert result["majority"] == 100.0 * np.bincount(dev_labels).max() / 6


def test_budget_head_takes_the_steps_it_is_given():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(64, 4)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  untrained = linear_probe.budget_head(x, y, 2, steps=0, batch=16, learning_rate=1e-1)
  trained = linear_probe.budget_head(x, y, 2, steps=200, batch=16, learning_rate=1e-1)
  assert np.all(untrained[1] == 0.0) and np.abs(untrained[0]).max() < 0.1  # the N(0, 0.02) init, unmoved
  assert linear_probe.accuracy(trained, x, y) >= 95.0


def test_fit_probe_separates_a_linear_rule():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 5)).astype(np.float32) * [1.0, 10.0, 0.1, 1.0, 1.0] + 3.0
  y = (x[:, 2] > 3.0).astype(np.int32)  # a small-scale, offset feature decides: standardising matters
  probe = linear_probe.fit_probe(x, y, 2, steps=300, l2=1e-4)
  assert linear_probe.accuracy(probe, x, y) >= 97.0
