"""`python -m prompt_tuning_jax.train` end to end on real data (RTE from DATA_DIR) with a tiny BERT.

Reliability: SIGKILL mid-run + the same command again gives bit-identical trainable parameters; a second trainer
on a live MODEL_DIR is refused (a killed one's does not block); a corrupted latest checkpoint is skipped with a
warning; a NaN loss stops with the step named and the last good checkpoint kept; wrong gin bindings / task
names fail in one line with close matches.
"""
import glob
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from prompt_tuning_jax import cli, gin_utils, runs
from prompt_tuning_jax.checkpoints.peft_io import PeftCheckpointManager
from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.evaluation.metrics import span_f1
from prompt_tuning_jax.train.trainer import TrainingDivergedError

TINY_BERT = ["bert_config.preset.embed_dim = 32", "bert_config.preset.num_heads = 4", "bert_config.preset.head_dim = 8",
             "bert_config.preset.mlp_dim = 64", "bert_config.preset.num_layers = 2"]


def argv(model_dir, steps, *extra):
  bindings = TINY_BERT + [
      f"MODEL_DIR = '{model_dir}'", "MIXTURE_OR_TASK_NAME = 'bert_glue_rte'", "TASK_FEATURE_LENGTHS = {'input_ids': 96}",
      "BATCH_SIZE = 4", f"TRAIN_STEPS = {steps}", "runs.Evaluation.split = None", "peft_io.Checkpointing.period = 5",
      "peft_io.Checkpointing.keep_last = 3", "runs.train.show_progress = False", "PROMPT_LENGTH = 4",
      "buckets.LengthBuckets.lengths = [48]", "buckets.LengthBuckets.window = 4", *extra]  # buckets 48 and 96
  return ["--gin_file=models/minilm.gin", "--gin_file=methods/prompt_tuning_random.gin", "--gin_file=runs/finetune.gin"] + [
      f"--gin.{b}" for b in bindings]


def args_files(args):
  return gin_utils.split_gin_args(args)[0]


def args_bindings(args):
  return gin_utils.split_gin_args(args)[1]


def final_trainable(model_dir):
  trained, step = PeftCheckpointManager(os.path.join(model_dir, "checkpoints")).restore_trainable("latest")
  return {k: np.asarray(v) for k, v in flatten_params(trained).items()}, step


def run_in_process(args):
  assert cli.main(args, runs.train, "test") == 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("uninterrupted"))
  run_in_process(argv(model_dir, 60))
  return model_dir


@pytest.mark.slow
def test_run_writes_config_checkpoints_and_scalars(uninterrupted):
  files = set(os.listdir(uninterrupted))
  assert {"config.gin", "checkpoints", "metrics.jsonl", "train"} <= files
  assert "BATCH_SIZE = 4" in open(os.path.join(uninterrupted, "config.gin")).read()
  manager = PeftCheckpointManager(os.path.join(uninterrupted, "checkpoints"))
  assert manager.steps() == [50, 55, 60]
  meta = manager.read_metadata(60)
  assert meta["vocabulary"]["class"] == "WordPieceVocabulary"
  assert meta["task"] == "bert_glue_rte" and meta["data_position"] == 240 and meta["model"] == \
      "BertForSequenceClassification"
  params, _ = final_trainable(uninterrupted)
  assert set(params) == {"bert/prompt/prompt", "classifier/kernel", "classifier/bias"}
  train_rows = [row for row in map(json.loads, open(os.path.join(uninterrupted, "metrics.jsonl")))
                if row["split"] == "train"]
  compiles = [row["compiles"] for row in train_rows]
  assert compiles == sorted(compiles) and compiles[-1] == 2  # one per bucket


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(uninterrupted, tmp_path):
  model_dir = str(tmp_path / "killed")
  command = [sys.executable, "-m", "prompt_tuning_jax.train"] + argv(model_dir, 60,
                                                                      "peft_io.Checkpointing.period = 1")
  process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = os.path.join(model_dir, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if os.path.isdir(checkpoints) and any(name.isdigit() and int(name) >= 10 for name in os.listdir(checkpoints)):
      break
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
  _, killed_at = final_trainable(model_dir)
  assert 10 <= killed_at < 60
  resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resuming from step {killed_at}" in resumed.stderr
  expected, _ = final_trainable(uninterrupted)
  got, step = final_trainable(model_dir)
  assert step == 60 and got.keys() == expected.keys()
  steps = [row["step"] for row in map(json.loads, open(os.path.join(model_dir, "metrics.jsonl")))
           if row["split"] == "train"]
  assert steps == list(range(1, 61))  # the killed attempt's rows after its checkpoint are dropped
  for path in expected:
    np.testing.assert_array_equal(got[path], expected[path], err_msg=path)


@pytest.mark.slow
def test_corrupted_latest_checkpoint_falls_back_with_a_warning(uninterrupted, tmp_path, caplog):
  model_dir = str(tmp_path / "corrupt")
  run_in_process(argv(model_dir, 10))
  state_dir = os.path.join(model_dir, "checkpoints", "10", "state")
  for root, _, names in os.walk(state_dir):
    for name in names:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))
  with caplog.at_level(logging.INFO):
    run_in_process(argv(model_dir, 60))
  assert any("step 10" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)
  assert any("resuming from step 5" in r.getMessage() for r in caplog.records)
  expected, _ = final_trainable(uninterrupted)
  got, _ = final_trainable(model_dir)
  for path in expected:  # resuming from step 5 replays steps 6..10 exactly
    np.testing.assert_array_equal(got[path], expected[path], err_msg=path)


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, capsys):
  model_dir = str(tmp_path / "nan")
  diverging = tmp_path / "diverging.gin"
  diverging.write_text("from __gin__ import dynamic_registration\nfrom prompt_tuning_jax.train import optimizers\n"
                       "OPTIMIZER = @optimizers.adamw()\noptimizers.adamw.learning_rate = 1e38\n")
  args = argv(model_dir, 20, "peft_io.Checkpointing.period = 1") + [f"--gin_file={diverging}"]
  with pytest.raises(TrainingDivergedError, match=r"loss is (nan|inf) at step 2; stopped\. The last good "
                                                  r"checkpoint \(step 1\)"):
    gin_utils.parse_gin(args_files(args), args_bindings(args))
    runs.train()
  assert cli.main(args, runs.train, "test") == 3
  assert "at step 2; stopped" in capsys.readouterr().err
  steps = PeftCheckpointManager(os.path.join(model_dir, "checkpoints")).steps()
  assert steps, "the last good checkpoint was not kept"
  params, _ = final_trainable(model_dir)
  assert all(np.isfinite(v).all() for v in params.values())


def test_unknown_binding_and_task_name_list_close_matches(tmp_path, capsys):
  assert cli.main(argv(str(tmp_path), 1, "runs.train.batch_sise = 2"), runs.train, "test") == 1
  err = capsys.readouterr().err
  assert "batch_sise" in err and "close matches for 'batch_sise': ['batch_size'" in err
  assert cli.main(argv(str(tmp_path), 1, "MIXTURE_OR_TASK_NAME = 'bert_glue_rtee'"), runs.train, "test") == 1
  err = capsys.readouterr().err
  assert "'bert_glue_rtee' is not a registered task" in err and "bert_glue_rte" in err
  assert len(err.strip().splitlines()) == 1


def eval_argv(entry, checkpoints, output_dir, *extra):
  run_file, key = {"eval": ("runs/eval.gin", "CHECKPOINT_DIRS"), "infer": ("runs/infer.gin", "CHECKPOINT_DIR")}[entry]
  bindings = TINY_BERT + [f"{key} = {checkpoints!r}", f"OUTPUT_DIR = '{output_dir}'", "BATCH_SIZE = 8",
                          "MIXTURE_OR_TASK_NAME = 'bert_glue_rte'", "TASK_FEATURE_LENGTHS = {'input_ids': 96}",
                          "PROMPT_LENGTH = 4", "runs.evaluate.max_examples = 20", *extra]
  return ["--gin_file=models/minilm.gin", "--gin_file=methods/prompt_tuning_random.gin", f"--gin_file={run_file}"] + [
      f"--gin.{b}" for b in bindings]


@pytest.mark.slow
def test_eval_infer_and_a_two_prompt_ensemble(tmp_path):
  prompt_only = tmp_path / "prompt_only.gin"  # the head stays at the seeded init: only prompts differ
  prompt_only.write_text("from __gin__ import dynamic_registration\nfrom prompt_tuning_jax.peft import trainable\n"
                         "trainable.trainable_mask.patterns = ['(^|/)prompt(/|$)']\n")
  uninterrupted, other = str(tmp_path / "seed0"), str(tmp_path / "seed1")
  run_in_process(argv(uninterrupted, 10) + [f"--gin_file={prompt_only}"])
  run_in_process(argv(other, 10, "runs.train.prompt_seed = 1", "runs.train.data_seed = 1") + [f"--gin_file={prompt_only}"])
  single = str(tmp_path / "single")
  assert cli.main(eval_argv("eval", [uninterrupted], single), runs.evaluate, "test") == 0
  metrics = json.load(open(os.path.join(single, "metrics.json")))
  assert metrics["scoring"] == "classifier" and metrics["num_examples"] == 20
  assert metrics["checkpoints"] == {uninterrupted: 10}
  lines = [json.loads(line) for line in open(os.path.join(single, "predictions.jsonl"))]
  assert len(lines) == 20
  assert metrics["accuracy"] == pytest.approx(100 * np.mean([l["prediction"] == l["target"] for l in lines]))
  inferred = str(tmp_path / "infer")
  assert cli.main(eval_argv("infer", other, inferred), runs.infer, "test") == 0
  other_metrics = json.load(open(os.path.join(inferred, "metrics.json")))
  ensemble_dir = str(tmp_path / "ensemble")
  assert cli.main(eval_argv("eval", [uninterrupted, other], ensemble_dir), runs.evaluate, "test") == 0
  report = json.load(open(os.path.join(ensemble_dir, "metrics.json")))
  assert report["num_prompts"] == 2  # the one-pass bank gives each run's own single-prompt result
  assert report["prompt_0/accuracy"] == pytest.approx(metrics["accuracy"])
  assert report["prompt_1/accuracy"] == pytest.approx(other_metrics["accuracy"])
  assert {"majority_vote/accuracy", "mean_log_prob/accuracy", "mean/accuracy", "best/accuracy"} <= set(report)
  with_head = str(tmp_path / "with_head")
  run_in_process(argv(with_head, 5))
  assert cli.main(eval_argv("eval", [uninterrupted, with_head], str(tmp_path / "x")), runs.evaluate, "t") == 1


def event_scalars(directory, tag):
  """{step: value} of one scalar tag in the TensorBoard event files under `directory`."""
  values = {}
  for path in glob.glob(os.path.join(directory, "events.out.tfevents*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      values.update({event.step: value.simple_value for value in event.summary.value if value.tag == tag})
  return values


@pytest.mark.slow
def test_periodic_eval_writes_scalars_and_keeps_the_best_and_the_last_checkpoint(tmp_path):
  model_dir = str(tmp_path / "evaluated")
  run_in_process(argv(model_dir, 10, "EVAL_PERIOD = 2", "runs.Evaluation.split = 'validation'",
                      "runs.Evaluation.max_examples = 4", "peft_io.Checkpointing.period = 2",
                      "peft_io.Checkpointing.keep_last = 1", "peft_io.Checkpointing.keep_best = 1",
                      "peft_io.Checkpointing.best_metric = 'accuracy'"))
  rows = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
  assert [row["step"] for row in rows if row["split"] == "train"] == list(range(1, 11))
  accuracy = {row["step"]: row["accuracy"] for row in rows if row["split"] == "eval"}
  assert sorted(accuracy) == [2, 4, 6, 8, 10]
  assert event_scalars(os.path.join(model_dir, "eval"), "accuracy") == pytest.approx(accuracy)
  # collapse diagnostics: the prompt's size every step, the spread of the head's features at every evaluation
  assert all(row["prompt_row_norm"] > 0 and row["norm/prompt"] > 0 for row in rows if row["split"] == "train")
  cosine = {row["step"]: row["feature_cosine"] for row in rows if row["split"] == "eval"}
  assert sorted(cosine) == sorted(accuracy) and all(-1 <= c <= 1 for c in cosine.values())
  assert event_scalars(os.path.join(model_dir, "eval"), "feature_cosine") == pytest.approx(cosine)
  eval_report = json.load(open(os.path.join(model_dir, "eval", "metrics.json")))
  assert eval_report["num_examples"] == 4 and eval_report["accuracy"] == pytest.approx(accuracy[10])
  # Best by accuracy, ties to the later step (peft_io's ranking), plus the newest: every other step is deleted.
  best, last = max((value, step) for step, value in accuracy.items())[1], 10
  manager = PeftCheckpointManager(os.path.join(model_dir, "checkpoints"), best_metric="accuracy")
  assert manager.steps() == sorted({best, last}) and manager.best_step() == best
  assert manager.read_metadata(best)["metrics"]["accuracy"] == pytest.approx(accuracy[best])
  # (an earlier best kept beside the newest, whatever this seed gives: tests/checkpoints/test_peft_io.py)


@pytest.mark.slow
def test_ner_trains_and_reports_entity_f1_with_a_progress_bar(tmp_path, capsys):
  model_dir = str(tmp_path / "ner")
  bindings = TINY_BERT + [
      f"MODEL_DIR = '{model_dir}'", "MIXTURE_OR_TASK_NAME = 'bert_cluener'", "TASK_FEATURE_LENGTHS = {'input_ids': 96}",
      "NUM_LABELS = 21", "BATCH_SIZE = 4", "TRAIN_STEPS = 3", "PROMPT_LENGTH = 4", "runs.Evaluation.max_examples = 6"]
  run_in_process(["--gin_file=models/minilm.gin", "--gin_file=models/bert_token_classification.gin",
                  "--gin_file=methods/prompt_tuning_random.gin", "--gin_file=runs/finetune.gin"] + [
                      f"--gin.{b}" for b in bindings])
  # the progress bar (stderr): steps done of total, elapsed<ETA, examples/s and the loss
  bar = capsys.readouterr().err.split("\r")
  assert any(re.search(r"3/3 \[\d\d:\d\d<\d\d:\d\d, .*ex_s=\d+\.\d, loss=\d+\.\d{4}\]", line) for line in bar), bar[-3:]
  report = json.load(open(os.path.join(model_dir, "eval", "metrics.json")))
  assert report["scoring"] == "token_classifier" and report["num_examples"] == 6
  records = [json.loads(line) for line in open(os.path.join(model_dir, "eval", "predictions.jsonl"))]
  assert len(records) == 6 and all(len(r["prediction"]) == len(r["target"]) for r in records)
  recomputed = span_f1([r["target"] for r in records], [r["prediction"] for r in records])
  assert {k: report[k] for k in ("precision", "recall", "f1")} == pytest.approx(recomputed)
  rows = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
  assert [(row["step"], row["f1"]) for row in rows if row["split"] == "eval"] == [(3, pytest.approx(report["f1"]))]


@pytest.mark.slow
def test_a_second_trainer_on_a_live_model_dir_is_refused_and_a_killed_holder_does_not_block(tmp_path, capsys,
                                                                                             caplog):
  model_dir = str(tmp_path / "held")
  command = [sys.executable, "-m", "prompt_tuning_jax.train"] + argv(model_dir, 100000,
                                                                     "peft_io.Checkpointing.period = 1")
  holder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = os.path.join(model_dir, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and holder.poll() is None and not (
      os.path.isdir(checkpoints) and any(name.isdigit() for name in os.listdir(checkpoints))):
    time.sleep(0.05)
  assert holder.poll() is None, "the holder stopped early"
  assert cli.main(argv(model_dir, 1), runs.train, "test") == 1
  err = capsys.readouterr().err.strip()
  assert err == (f"error: ValueError: MODEL_DIR {model_dir} is in use by another training job (pid {holder.pid}, "
                 f"lock {model_dir}/.lock); wait for it, stop it, or choose another MODEL_DIR")
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  _, killed_at = final_trainable(model_dir)
  assert open(os.path.join(model_dir, ".lock")).read().strip() == str(holder.pid)  # stale: its pid is gone
  with caplog.at_level(logging.INFO):
    assert cli.main(argv(model_dir, killed_at + 1), runs.train, "test") == 0
  assert any(f"resuming from step {killed_at}" in r.getMessage() for r in caplog.records)
