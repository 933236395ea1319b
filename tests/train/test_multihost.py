"""Multi-host for real: 2 JAX processes x 2 CPU devices (prompt_tuning_jax.launch, gloo collectives) against one
process x 4 devices, on real RTE with a tiny BERT and a tiny T5 (prompt tuning + LoRA, one run each).

- training: the per-step losses and the trained leaves equal the 1-process run to RTOL (the all-reduce of the
  gradients runs over gloo across processes, in another order than inside one process: not bit-identical);
  each process feeds its own half of every global batch (the data shards: tests/tasks/test_buckets.py).
- evaluation (the trainer's, `eval` of one run and of a 2-prompt ensemble) is sharded: each process scores its
  rows of each batch and predictions.jsonl / metrics.json equal the 1-process files for the same checkpoints.
- model parallel across processes: num_partitions=4 over the 2 processes x 2 devices (the 'model' axis spans
  both processes, and each process's devices), against the same 1-process run.
- checkpoints: the 2-process checkpoint restores in this 1-device process (eval, and training on); kill -9 of
  one process stops the job, and the same launch command resumes to leaves bit-identical to an uninterrupted
  2-process run. A second trainer on the directory the 2-process job holds is refused.

Cost (the file is marked slow): every process pays its imports (~8 s CPU, TensorFlow for seqio) and its
compiles, so the runs share launches (one 1-process job, one 2-process job for training, evaluation and the
model-parallel run, then the kill and the resume), the tiny BERT has one layer, and the launched processes compile
with LLVM's cheap settings (FAST_COMPILE: half the compile time; every run compared here, 1 or 2 processes, uses
them, and the restore test's eval in this process, at the default settings, still matches).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import sentencepiece

from prompt_tuning_jax import cli, runs
from prompt_tuning_jax.checkpoints.peft_io import PeftCheckpointManager
from prompt_tuning_jax.checkpoints.tree import flatten_params
from tasks import data_dir, vocabularies

pytestmark = pytest.mark.slow  # multi-process: launches JAX jobs (`make test-fast` skips them)

JOBS = os.path.join(os.path.dirname(__file__), "multihost_jobs.py")
RTOL, ATOL = 2e-6, 1e-7  # measured: losses within 1.5e-7, leaves within 4e-7 of their largest entry (README)
MODEL_PARALLEL_RTOL = 1e-5  # measured 8.8e-7: a (1, 4) mesh against the (4, 1) mesh, other reductions again
STEPS = 8
TINY_BERT = ["bert_config.preset.embed_dim = 32", "bert_config.preset.num_heads = 4", "bert_config.preset.head_dim = 8",
             "bert_config.preset.mlp_dim = 64", "bert_config.preset.num_layers = 1",
             "bert_config.preset.vocab_size = 30524"]  # MiniLM's 30522 ids, padded to split over 4 model shards
TINY_T5 = ["t5_config.preset.vocab_size = 512", "t5_config.preset.embed_dim = 16", "t5_config.preset.num_heads = 2",
           "t5_config.preset.head_dim = 8", "t5_config.preset.mlp_dim = 32", "t5_config.preset.num_encoder_layers = 1",
           "t5_config.preset.num_decoder_layers = 1"]
COMMON = ["BATCH_SIZE = 8", f"TRAIN_STEPS = {STEPS}", "PROMPT_LENGTH = 4", "runs.train.show_progress = False",
          "peft_io.Checkpointing.period = 4", "runs.Evaluation.max_examples = 12", "runs.Evaluation.batch_size = 8"]
PROMPT_METHOD = ("methods/prompt_tuning_random.gin",)
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"  # as test_trajectories


def gin_args(files, bindings):
  return [f"--gin_file={f}" for f in files] + [f"--gin.{b}" for b in bindings]


def bert_train(model_dir, *extra, methods=("methods/prompt_tuning_random.gin", "methods/lora.gin")):
  return gin_args(["models/minilm.gin", *methods, "runs/finetune.gin"], TINY_BERT + COMMON + [
      f"MODEL_DIR = '{model_dir}'", "MIXTURE_OR_TASK_NAME = 'bert_glue_rte'",
      "TASK_FEATURE_LENGTHS = {'input_ids': 96}", "buckets.LengthBuckets.lengths = [48]",
      "buckets.LengthBuckets.window = 4", *extra])  # buckets 48 and 96


def t5_train(model_dir):
  return gin_args(["models/t5_1_1_small.gin", "methods/prompt_tuning_random.gin", "methods/lora.gin",
                   "runs/finetune.gin"], TINY_T5 + COMMON + [
      f"MODEL_DIR = '{model_dir}'", "MIXTURE_OR_TASK_NAME = 'glue_rte_taskless'",
      "TASK_FEATURE_LENGTHS = {'inputs': 48, 'targets': 4}", "runs.train.buckets = None"])


def bert_eval(checkpoint_dirs, output_dir, methods=("methods/prompt_tuning_random.gin", "methods/lora.gin")):
  return gin_args(["models/minilm.gin", *methods, "runs/eval.gin"], TINY_BERT + [
      f"CHECKPOINT_DIRS = {checkpoint_dirs!r}", f"OUTPUT_DIR = '{output_dir}'", "BATCH_SIZE = 8", "PROMPT_LENGTH = 4",
      "MIXTURE_OR_TASK_NAME = 'bert_glue_rte'", "TASK_FEATURE_LENGTHS = {'input_ids': 96}",
      "runs.evaluate.max_examples = 12", "buckets.LengthBuckets.lengths = [48]"])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """The subprocesses' environment: a 400-id SentencePiece model for the T5 tasks (trained here on RTE)."""
  directory = tmp_path_factory.mktemp("spm")
  with open(os.path.join(data_dir.SHARED_DATA_DIR, "glue/RTE/dev.tsv"), encoding="utf-8") as f:
    (directory / "text.txt").write_text(f.read() + "entailment not_entailment\n" * 20)
  sentencepiece.SentencePieceTrainer.train(input=str(directory / "text.txt"), model_prefix=str(directory / "spm"),
                                           vocab_size=400, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
  return {**os.environ, vocabularies.T5_VOCAB_ENV: str(directory / "spm.model"),
          "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()}


def launch_command(num_processes, devices_per_process, command):
  return [sys.executable, "-m", "prompt_tuning_jax.launch", f"--num_processes={num_processes}",
          f"--devices_per_process={devices_per_process}", "--", sys.executable, *command]


def run_jobs(env, jobs, root, launch=None):
  """Runs [(entry, argv)] in one job: 1 process x 4 devices, or under the launcher `(processes, devices)`."""
  path = os.path.join(root, "jobs.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(jobs, f)
  if launch is None:
    command = [sys.executable, JOBS, path]
    env = {**env, "XLA_FLAGS": f"{env['XLA_FLAGS']} --xla_force_host_platform_device_count=4"}
  else:
    command = launch_command(*launch, [JOBS, path])
  result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
  return result.stdout + result.stderr


@pytest.fixture(scope="module")
def one_process(env, tmp_path_factory):
  """1 process x 4 devices: BERT and T5 trained (and evaluated), two prompt-only BERT runs and their ensemble."""
  root = str(tmp_path_factory.mktemp("one_process"))
  dirs = {name: os.path.join(root, name) for name in ("bert", "t5", "prompt0", "prompt1", "ensemble")}
  prompt_only = os.path.join(root, "prompt_only.gin")  # the head stays at the seeded init: only prompts differ
  with open(prompt_only, "w", encoding="utf-8") as f:
    f.write("from __gin__ import dynamic_registration\nfrom prompt_tuning_jax.peft import trainable\n"
            "trainable.trainable_mask.patterns = ['(^|/)prompt(/|$)']\n")
  run_jobs(env, [
      ["train", bert_train(dirs["bert"])], ["train", t5_train(dirs["t5"])],
      ["train", bert_train(dirs["prompt0"], "TRAIN_STEPS = 2", "runs.Evaluation.split = None",
                           "runs.train.buckets = None", methods=PROMPT_METHOD + (prompt_only,))],
      ["train", bert_train(dirs["prompt1"], "TRAIN_STEPS = 2", "runs.Evaluation.split = None",
                           "runs.train.buckets = None", "runs.train.prompt_seed = 1", "runs.train.data_seed = 1",
                           methods=PROMPT_METHOD + (prompt_only,))],
      ["eval", bert_eval([dirs["prompt0"], dirs["prompt1"]], dirs["ensemble"], PROMPT_METHOD)]], root)
  return dirs


@pytest.fixture(scope="module")
def two_processes(env, one_process, tmp_path_factory):
  """2 processes x 2 devices: the same BERT and T5 runs, `eval` of the 1-process checkpoints (one run, and the
  2-prompt ensemble), and the BERT run again on a (1, 4) mesh: model parallel across the processes."""
  root = str(tmp_path_factory.mktemp("two_processes"))
  dirs = {name: os.path.join(root, name) for name in ("bert", "t5", "eval_bert", "ensemble", "model_parallel")}
  output = run_jobs(env, [
      ["train", bert_train(dirs["bert"])], ["train", t5_train(dirs["t5"])],
      ["eval", bert_eval([one_process["bert"]], dirs["eval_bert"])],
      ["eval", bert_eval([one_process["prompt0"], one_process["prompt1"]], dirs["ensemble"], PROMPT_METHOD)],
      ["train", bert_train(dirs["model_parallel"], "runs.train.num_partitions = 4", "runs.Evaluation.split = None")]],
      root, launch=(2, 2))
  return dirs, output


def final_trainable(model_dir):
  trained, step = PeftCheckpointManager(os.path.join(model_dir, "checkpoints")).restore_trainable("latest")
  return {k: np.asarray(v) for k, v in flatten_params(trained).items()}, step


def train_losses(model_dir):
  with open(os.path.join(model_dir, "metrics.jsonl"), encoding="utf-8") as f:
    return [row["loss"] for row in map(json.loads, f) if row["split"] == "train"]


def read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def assert_metrics_close(got, expected):
  assert got.keys() == expected.keys()
  for key, value in expected.items():
    assert got[key] == (pytest.approx(value, rel=RTOL) if isinstance(value, float) else value), key


def assert_trained_alike(got_dir, expected_dir, rtol=RTOL):
  expected, expected_step = final_trainable(expected_dir)
  got, step = final_trainable(got_dir)
  assert step == expected_step == STEPS and got.keys() == expected.keys()
  assert any("lora" in path for path in got) and any("prompt" in path for path in got)
  np.testing.assert_allclose(train_losses(got_dir), train_losses(expected_dir), rtol=rtol)
  for path in expected:
    np.testing.assert_allclose(got[path], expected[path], rtol=rtol, atol=ATOL, err_msg=path)


@pytest.mark.parametrize("model", ["bert", "t5"])
def test_two_processes_train_like_one(one_process, two_processes, model):
  dirs, output = two_processes
  assert_trained_alike(dirs[model], one_process[model])
  for process, rows in ((0, "[0, 4)"), (1, "[4, 8)")):  # each process feeds its half of every global batch
    assert f"[{process}] INFO:prompt_tuning_jax.train.trainer:process {process} of 2 feeds rows {rows} of each " \
           "global batch of 8" in output
    assert f"process {process} of 2 scores rows {rows} of each evaluation batch of 8 (2 batches)" in output
  expected = json.loads(read(os.path.join(one_process[model], "eval", "metrics.json")))
  got = json.loads(read(os.path.join(dirs[model], "eval", "metrics.json")))
  assert got["num_examples"] == 12
  assert_metrics_close(got, expected)


def test_sharded_eval_writes_the_one_process_files(one_process, two_processes):
  dirs, _ = two_processes
  for got, expected in ((dirs["eval_bert"], os.path.join(one_process["bert"], "eval")),
                        (dirs["ensemble"], one_process["ensemble"])):
    for name in ("predictions.jsonl", "metrics.json"):
      got_text, expected_text = read(os.path.join(got, name)), read(os.path.join(expected, name))
      if name == "metrics.json":  # eval adds the checkpoints it read (the same directories)
        got_text = json.dumps({k: v for k, v in json.loads(got_text).items() if k != "checkpoints"})
        expected_text = json.dumps({k: v for k, v in json.loads(expected_text).items() if k != "checkpoints"})
      assert got_text == expected_text, (got, name)
  assert len(read(os.path.join(dirs["ensemble"], "predictions.jsonl")).splitlines()) == 12
  assert "majority_vote/accuracy" in json.loads(read(os.path.join(dirs["ensemble"], "metrics.json")))


def test_model_parallel_across_processes(one_process, two_processes):
  """num_partitions=4 over 2 processes x 2 devices: the 'model' axis spans the processes (both feed all rows)."""
  dirs, output = two_processes
  assert "process 1 of 2 feeds rows [0, 8) of each global batch of 8" in output  # only this run feeds all rows
  assert_trained_alike(dirs["model_parallel"], one_process["bert"], rtol=MODEL_PARALLEL_RTOL)


def test_two_process_checkpoint_restores_in_one_process(two_processes, tmp_path):
  dirs, _ = two_processes
  model_dir = str(tmp_path / "bert")
  shutil.copytree(dirs["bert"], model_dir)
  expected = json.loads(read(os.path.join(dirs["bert"], "eval", "metrics.json")))
  assert cli.main(bert_eval([model_dir], str(tmp_path / "eval")), runs.evaluate, "test") == 0
  got = json.loads(read(str(tmp_path / "eval" / "metrics.json")))
  assert_metrics_close({k: v for k, v in got.items() if k != "checkpoints"}, expected)
  assert cli.main(bert_train(model_dir, f"TRAIN_STEPS = {STEPS + 1}", "runs.Evaluation.split = None"),
                  runs.train, "test") == 0
  _, step = final_trainable(model_dir)
  assert step == STEPS + 1 and len(train_losses(model_dir)) == STEPS + 1


def wait_for(condition, launcher, seconds=600):
  deadline = time.time() + seconds
  while time.time() < deadline and launcher.poll() is None and not condition():
    time.sleep(0.02)


def test_kill_one_process_stops_the_job_and_the_same_command_resumes(env, two_processes, tmp_path, capsys):
  """Also: while the 2-process job holds MODEL_DIR, a second trainer is refused naming process 0's pid."""
  dirs, _ = two_processes
  model_dir = str(tmp_path / "killed")
  args = bert_train(model_dir, "peft_io.Checkpointing.period = 2", "peft_io.Checkpointing.keep_last = 2",
                    "runs.Evaluation.split = None")
  command = launch_command(2, 2, ["-m", "prompt_tuning_jax.train"] + args)
  log = tmp_path / "launch.log"
  with open(log, "w", encoding="utf-8") as out:
    launcher = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    lock = os.path.join(model_dir, ".lock")
    wait_for(lambda: os.path.isfile(lock) and read(lock).strip(), launcher)  # taken before the model is built
    pids = [int(p) for p in re.findall(r"\[launch\] process \d of 2: pid (\d+)", log.read_text())]
    assert cli.main(args, runs.train, "test") == 1
    assert f"error: ValueError: MODEL_DIR {model_dir} is in use by another training job (pid {pids[0]}, " \
           in capsys.readouterr().err
    checkpoints = os.path.join(model_dir, "checkpoints")
    wait_for(lambda: os.path.isdir(checkpoints) and any(n.isdigit() and int(n) >= 2 for n in os.listdir(checkpoints)),
             launcher)
    os.kill(pids[1], signal.SIGKILL)
    killed = time.time()
    status = launcher.wait(timeout=120)
  assert status != 0, f"the run finished before it could be killed:\n{log.read_text()[-3000:]}"
  assert time.time() - killed < 60, "the launcher did not stop the surviving process"
  assert "[launch] process 1 exited with status 137; stopped the others" in log.read_text()
  _, killed_at = final_trainable(model_dir)
  assert 2 <= killed_at < STEPS
  resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
  assert resumed.returncode == 0, resumed.stdout[-3000:]
  assert f"[0] INFO:prompt_tuning_jax.train.trainer:resuming from step {killed_at}" in resumed.stdout
  expected, _ = final_trainable(dirs["bert"])
  got, step = final_trainable(model_dir)
  assert step == STEPS and got.keys() == expected.keys()
  for path in expected:
    np.testing.assert_array_equal(got[path], expected[path], err_msg=path)
