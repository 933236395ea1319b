"""The benchmark entry point on tiny T5 and BERT (prompt tuning + full fine-tuning, one timed step).

Runs `python -m prompt_tuning_jax.bench` in a child process in which gin, seqio and tensorflow cannot be
imported (GPU machines lack them), then checks the output files and their schema, that the prompt-tuning
step costs at most 0.70x the FLOPs of full fine-tuning at the same shapes (the issue's ratios
P/L = 100/512 and T/L = 16/512, here 12/64 and 2/64), that a K-prompt ensemble pass costs the FLOPs of a
plain pass over K times the batch, and that the PEFT side is there whenever torch and peft import.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from prompt_tuning_jax.bench import ensemble, peft_side, report

ARGS = ["--models", "t5_tiny,bert_tiny", "--methods", "prompt_tuning,full_finetuning", "--batch", "2",
        "--input_length", "64", "--target_length", "2", "--prompt_length", "12", "--steps", "1", "--warmup", "1",
        "--ensemble", "2"]
BLOCKED = "import sys, runpy\nfor m in ('gin', 'seqio', 'tensorflow'): sys.modules[m] = None\n"
# NOTE: XLA's CPU backend optimisations take longer than these tiny steps run; FLOPs do not depend on them.
FAST_COMPILE = "--xla_backend_optimization_level=0"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(bench.json as a dict, out_dir, the child's stdout) of one tiny run."""
  out_dir = str(tmp_path_factory.mktemp("bench"))
  code = BLOCKED + (f"sys.argv = ['bench'] + {ARGS + ['--out_dir', out_dir]!r}\n"
                    "runpy.run_module('prompt_tuning_jax.bench', run_name='__main__')\n")
  env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()}
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(out_dir, "bench.json")) as f:
    return json.load(f), out_dir, done.stdout


@pytest.mark.slow
def test_files_and_command(run):
  result, out_dir, stdout = run
  assert sorted(os.listdir(out_dir)) == ["bench.json", "bench.md", "command.txt"]
  with open(os.path.join(out_dir, "command.txt")) as f:
    command = f.read().strip()
  assert command == result["command"]
  assert command.startswith("python -m prompt_tuning_jax.bench --models t5_tiny,bert_tiny")
  with open(os.path.join(out_dir, "bench.md")) as f:
    assert f.read() == stdout.strip() + "\n"


@pytest.mark.slow
def test_schema(run):
  result = run[0]
  assert set(report.SCHEMA_KEYS) <= set(result), sorted(set(report.SCHEMA_KEYS) - set(result))
  assert result["device"]["platform"] == "cpu" and result["device"]["peak_flops"] > 0
  assert len(result["rows"]) == 4
  for entry in result["rows"]:
    assert set(report.ROW_KEYS) <= set(entry)
    ours = entry["ours"]
    assert "error" not in ours, ours
    assert set(report.OURS_KEYS) <= set(ours)
    assert ours["finite_loss"] and ours["step_s"] > 0 and ours["compile_s"] > 0 and ours["flops"] > 0
    tokens = entry["row"]["input_length"] + entry["row"]["target_length"]
    assert math.isclose(ours["tokens_per_s"], tokens * entry["row"]["batch"] / ours["step_s"])
    assert 0 < ours["mfu"] < 1
    assert ours["xla_memory_bytes"] > 0 and ours["peak_memory_bytes"] is None  # CPU: no device stats
    assert "load_average" in entry and entry["load_average"]["before"]
  statuses = {t["status"].split(":")[0] for t in result["targets"]}
  assert statuses <= {"met", "missed", "pending"}, statuses


@pytest.mark.slow
def test_prompt_tuning_costs_at_most_070_of_full_finetuning(run):
  ratios = {e["model"]: e for e in run[0]["flop_ratios"]}
  assert sorted(ratios) == ["bert_tiny", "t5_tiny"]
  for model, entry in ratios.items():
    assert entry["same_shapes"] <= 0.70, (model, entry)
    # The encoder of full fine-tuning without a prompt is P rows shorter, so that ratio is higher.
    assert entry["same_shapes"] < entry["vs_no_prompt"] < 1.0, (model, entry)
  targets = [t for t in run[0]["targets"] if "(same shapes)" in t["target"]]
  assert [t["status"] for t in targets] == ["met", "met"]


@pytest.mark.slow
def test_ensemble_costs_the_flops_of_a_plain_pass(run):
  entries = run[0]["ensembles"]
  assert [(e["model"], e["num_prompts"], e["rows"]) for e in entries] == [("t5_tiny", 2, 2), ("bert_tiny", 2, 2)]
  for e in entries:
    assert e["flop_ratio"] == pytest.approx(1.0, abs=0.01)
    assert e["flop_ratio_vs_no_prompt"] > 1.0  # the prompt rows cost FLOPs of their own


@pytest.mark.slow
def test_peft_column(run):
  """peft, torch and transformers are test requirements (setup.py): every row has its PEFT side."""
  result = run[0]
  assert peft_side.unavailable() is None, peft_side.unavailable()
  assert set(result["versions"]) >= {"torch", "transformers", "peft"}
  for entry in result["rows"]:
    assert entry["peft_skipped"] is None, entry["peft_skipped"]
    assert entry["peft"]["step_s"] > 0 and math.isfinite(entry["peft"]["loss"])
    assert entry["ratio"]["tokens_per_s"] == pytest.approx(entry["ours"]["tokens_per_s"] / entry["peft"]["tokens_per_s"])
  # Same trainable parameters on both sides: the prompt P x d (+ BERT's classifier), or every weight.
  by_setting = {(e["row"]["model"], e["row"]["method"]): e for e in result["rows"]}
  assert by_setting[("t5_tiny", "prompt_tuning")]["peft"]["trainable_params"] == 12 * 256
  assert by_setting[("t5_tiny", "prompt_tuning")]["ours"]["trainable_params"] == 12 * 256
  bert_prompt = by_setting[("bert_tiny", "prompt_tuning")]
  assert bert_prompt["peft"]["trainable_params"] == bert_prompt["ours"]["trainable_params"] == 12 * 256 + 256 * 2 + 2
  assert "PEFT step s" in run[2]


def test_ensemble_batch_repeats_each_example_per_prompt():
  batch = {"input_ids": np.arange(6).reshape(3, 2)}
  rows = ensemble.ensemble_batch(batch, 2)
  np.testing.assert_array_equal(rows["input_ids"], [[0, 1], [0, 1], [2, 3], [2, 3], [4, 5], [4, 5]])
  np.testing.assert_array_equal(rows["prompt_index"], [0, 1, 0, 1, 0, 1])


def test_unknown_names_fail_naming_the_known_ones(capsys):
  from prompt_tuning_jax.bench.__main__ import main  # pylint: disable=import-outside-toplevel
  assert main(["--models", "t5_tiny", "--methods", "prompt_tunning"]) == 2
  err = capsys.readouterr().err
  assert "prompt_tunning" in err and "prompt_tuning" in err
