"""The run files (gin/runs/) are shipped and tracked, and bind every required argument of their run function."""
import inspect
import os
import subprocess

import gin
import jax
import numpy as np
import optax
import pytest

from prompt_tuning_jax import cli, gin_utils, runs
from prompt_tuning_jax.train import optimizers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_FILES = {"finetune": [runs.train], "demo": [runs.train], "eval": [runs.evaluate],
             "infer": [runs.infer, runs.evaluate]}  # infer passes the rest of evaluate's arguments through gin


def required_arguments(fn) -> set[str]:
  return {name for name, p in inspect.signature(inspect.unwrap(fn)).parameters.items()
          if p.kind == p.KEYWORD_ONLY and p.default is gin.REQUIRED}


def test_no_shipped_gin_file_is_ignored_by_git():
  """A .gitignore line like `runs/` once kept gin/runs/ out of every commit (CI failed on the missing files)."""
  shipped = [os.path.relpath(os.path.join(root, name), REPO)
             for root, _, names in os.walk(os.path.join(REPO, "gin")) for name in names if name.endswith(".gin")]
  ignored = subprocess.run(["git", "check-ignore", "--no-index", *shipped], cwd=REPO, capture_output=True, text=True)
  assert ignored.returncode in (0, 1), ignored.stderr  # 0: some ignored, 1: none; 128: not a git checkout
  assert ignored.stdout.split() == [], f"gin files ignored by .gitignore: {ignored.stdout.split()}"


@pytest.mark.parametrize("name", sorted(RUN_FILES))
def test_run_file_binds_every_required_argument(name):
  gin_utils.parse_gin(["models/minilm.gin", "methods/lora.gin", f"runs/{name}.gin"], finalize=False)
  for fn in RUN_FILES[name]:
    required = required_arguments(fn)
    assert required, f"{fn.__name__}: no gin.REQUIRED arguments found (the signature was not read)"
    for argument in required:
      gin.query_parameter(f"{fn.__module__.split('.')[-1]}.{fn.__name__}.{argument}")  # raises if unbound


def test_demo_file_is_the_documented_run():
  gin_utils.parse_gin(["models/minilm.gin", "methods/lora.gin", "runs/demo.gin"],
                      ["MODEL_DIR = '/tmp/demo'", "INITIAL_CHECKPOINT_PATH = None"])
  assert gin.query_parameter("%MIXTURE_OR_TASK_NAME") == "bert_glue_sst2"
  assert (gin.query_parameter("%TRAIN_STEPS"), gin.query_parameter("%BATCH_SIZE")) == (300, 32)  # README
  # The optimizer the run builds, against the file's comments written out in optax: the LoRA leaves get He et
  # al.'s AdamW at 1e-3 (6% warmup, linear decay, clipping 1.0, wd 0.1), the classifier AdamW at the head's 1e-3
  # (the method's warmup and linear decay, no weight decay; results/head.gin).
  rng = np.random.default_rng(0)
  params = {"bert": {"query": {"lora_a": rng.normal(size=(4, 2)), "lora_b": rng.normal(size=(2, 4))}},
            "classifier": {"kernel": rng.normal(size=(4, 2)), "bias": rng.normal(size=(2,))}}
  params = jax.tree_util.tree_map(lambda x: x.astype(np.float32), params)
  labels = {"bert": {"query": {"lora_a": "inner", "lora_b": "inner"}}, "classifier": {"kernel": "head", "bias": "head"}}
  schedule = optax.join_schedules([optax.linear_schedule(0.0, 1e-3, 18), optax.linear_schedule(1e-3, 0.0, 282)], [18])
  inner = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adamw(schedule, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1))
  head = optax.adamw(schedule, eps=1e-6, weight_decay=0.0)
  expected = optax.multi_transform({"inner": inner, "head": head}, labels)
  got = optimizers.gin_optimizer()
  paths = []
  for optimizer in (got, expected):
    state, moved = optimizer.init(params), params
    for step in range(25):  # through the warmup
      grads = jax.tree_util.tree_map(lambda x, s=step: np.cos(x * (s + 1)), params)
      updates, state = optimizer.update(grads, state, moved)
      moved = optax.apply_updates(moved, updates)
    paths.append(moved)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), *paths)
  assert not np.allclose(paths[0]["classifier"]["kernel"], params["classifier"]["kernel"])


def test_a_missing_required_macro_fails_in_one_line_naming_it(capsys):
  argv = ["--gin_file=models/minilm.gin", "--gin_file=methods/lora.gin", "--gin_file=runs/finetune.gin",
          "--gin.MIXTURE_OR_TASK_NAME='bert_glue_rte'", "--gin.TASK_FEATURE_LENGTHS={'input_ids': 32}"]
  assert cli.main(argv, runs.train, "test") == 1
  err = capsys.readouterr().err.strip()
  assert "MODEL_DIR" in err and "gin.REQUIRED" in err and len(err.splitlines()) == 1, err



def test_a_method_file_without_optimizer_fails_in_one_line_naming_the_macro(tmp_path, capsys):
  """No default optimizer stands in (it used to be prompt tuning's Adafactor): the method's file binds OPTIMIZER."""
  lora = open(gin_utils.resolve_gin_file("methods/lora.gin")).read()
  method = tmp_path / "lora_without_optimizer.gin"
  method.write_text("\n".join(line for line in lora.splitlines() if not line.startswith("OPTIMIZER")))
  model_dir = tmp_path / "run"
  argv = ["--gin_file=models/minilm.gin", f"--gin_file={method}", "--gin_file=runs/finetune.gin",
          f"--gin.MODEL_DIR='{model_dir}'", "--gin.MIXTURE_OR_TASK_NAME='bert_glue_rte'",
          "--gin.TASK_FEATURE_LENGTHS={'input_ids': 32}"]
  assert cli.main(argv, runs.train, "test") == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert "OPTIMIZER is not bound" in err and "gin/methods/" in err and "methods/prompt_tuning.gin" in err, err
  assert not model_dir.exists()  # refused before MODEL_DIR is touched
  gin_utils.parse_gin(["models/minilm.gin", "methods/lora.gin"])
  assert optimizers.gin_optimizer() is not None

def test_a_misspelled_macro_binding_fails_in_one_line_naming_it_and_the_close_match(capsys):
  """gin itself accepts `--gin.TRAIN_STEP=5` and trains the file's TRAIN_STEPS: the run would be silently wrong."""
  argv = ["--gin_file=models/minilm.gin", "--gin_file=methods/lora.gin", "--gin_file=runs/finetune.gin",
          "--gin.MODEL_DIR='/tmp/never'", "--gin.MIXTURE_OR_TASK_NAME='bert_glue_rte'",
          "--gin.TASK_FEATURE_LENGTHS={'input_ids': 32}", "--gin.TRAIN_STEP=5"]
  assert cli.main(argv, runs.train, "test") == 1
  err = capsys.readouterr().err.strip()
  assert "TRAIN_STEP=5" in err and "'TRAIN_STEPS'" in err and len(err.splitlines()) == 1, err
  assert not os.path.exists("/tmp/never")


def test_macros_that_files_define_or_use_are_accepted_on_the_command_line():
  gin_utils.parse_gin(["models/minilm.gin", "methods/prompt_tuning_random.gin", "runs/finetune.gin"],
                      ["MODEL_DIR = '/tmp/x'", "PROMPT_LENGTH = 7", "TRAIN_STEPS = 3", "BATCH_SIZE = 2"],
                      finalize=False, check_macros=True)
  assert gin.query_parameter("%PROMPT_LENGTH") == 7 and gin.query_parameter("%TRAIN_STEPS") == 3


@pytest.mark.parametrize("method_file, inner_lr, head_lr", [("results/lora.gin", 3e-3, 1e-3),
                                                            ("results/full_finetuning.gin", 2e-4, 2e-4)])
def test_results_runs_give_the_head_its_own_learning_rate(method_file, inner_lr, head_lr):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  gin_utils.parse_gin(["models/minilm.gin", method_file, "results/run.gin"],
                      ["TRAIN_STEPS = 100", "optimizers.linear_decay.warmup_fraction = 0.0"], finalize=False)
  optimizer = optimizers.gin_optimizer()
  params = {"bert": {"layers_0": {"attention": {"lora_query": {"a": jnp.zeros(3)}}}},
            "classifier": {"kernel": jnp.zeros(3)}}
  updates, _ = optimizer.update(jax.tree_util.tree_map(jnp.ones_like, params), optimizer.init(params), params)
  # Adam's first update is -lr * sign(g): the head at HEAD_LEARNING_RATE (results/head.gin), the rest at the
  # method's LEARNING_RATE; full fine-tuning has one rate for everything (no head.gin).
  np.testing.assert_allclose(updates["bert"]["layers_0"]["attention"]["lora_query"]["a"], -inner_lr, rtol=1e-3)
  np.testing.assert_allclose(updates["classifier"]["kernel"], -head_lr, rtol=1e-3)
