"""gin-configured runs with t5x's conventions: `runs.train`, `runs.evaluate`, `runs.infer`.

  python -m prompt_tuning_jax.train --gin_file=models/minilm.gin --gin_file=methods/lora.gin \
      --gin_file=runs/finetune.gin --gin.MODEL_DIR="'/tmp/run'" --gin.MIXTURE_OR_TASK_NAME="'bert_glue_sst2'"

gin/runs/*.gin bind these functions' arguments to t5x's macros (MODEL, MODEL_DIR, MIXTURE_OR_TASK_NAME,
TASK_FEATURE_LENGTHS, BATCH_SIZE, TRAIN_STEPS, INITIAL_CHECKPOINT_PATH, EVAL_PERIOD, DATA_DIR). The optimizer
is the method file's `OPTIMIZER` macro when it defines one, else prompt tuning's Adafactor (train/optimizers.py);
the trainable mask is the gin-configured `trainable.trainable_mask` (the one source of truth for what trains).
"""
import dataclasses
import difflib
import logging
import os
from typing import Any, Mapping, Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import seqio

from prompt_tuning_jax.checkpoints.peft_io import PeftCheckpointManager
from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning_jax.params import configured
from prompt_tuning_jax.peft import prompts, trainable
from prompt_tuning_jax.train import data as train_data
from prompt_tuning_jax.train import trainer

log = logging.getLogger(__name__)


def check_task_name(name: str) -> None:
  """A clear error with close matches for an unregistered task or mixture."""
  known = sorted(seqio.TaskRegistry.names() | seqio.MixtureRegistry.names())
  if name not in known:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    raise ValueError(f"MIXTURE_OR_TASK_NAME={name!r} is not a registered task or mixture; close matches: "
                     f"{close or 'none'} (tasks/registry.py lists the names)")


def model_metadata(model: nn.Module) -> dict[str, Any]:
  """What a checkpoint records about the model: class, config and the bound method slots."""
  slots = getattr(model, "slots", None)
  methods = {} if slots is None else {
      name: getattr(getattr(value, "func", value), "__qualname__", str(value))
      for name, value in vars(slots).items() if callable(value)}
  return {"model": type(model).__name__, "config": dataclasses.asdict(model.config), "methods": methods}


def _gin_optimizer():
  try:
    reference = gin.query_parameter("%OPTIMIZER")
  except ValueError:
    return None  # trainer's default: prompt tuning's Adafactor
  from prompt_tuning_jax.train import optimizers  # pylint: disable=g-import-not-at-top
  return optimizers.build_optimizer(reference.scoped_configurable_fn())


def prepare_prompt(seed: int):
  """params -> params with table-based prompt inits drawn (peft/prompts.py), when a prompt is bound."""
  def prepare(params: dict) -> dict:
    try:
      gin.query_parameter("prompts.initialize_prompt.initializer")
    except ValueError:
      return params  # no prompt method, or an init that model.init already drew
    return configured(prompts.initialize_prompt)(params, rng=jax.random.key(seed + 2))
  return prepare


@gin.configurable
def train(*, model: nn.Module = gin.REQUIRED, model_dir: str = gin.REQUIRED,
          mixture_or_task_name: str = gin.REQUIRED, task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          batch_size: int = gin.REQUIRED, train_steps: int = gin.REQUIRED,
          initial_checkpoint_path: Optional[str] = None, eval_period: int = 0, data_dir: Optional[str] = None,
          train_split: str = "train", eval_split: Optional[str] = "validation",
          eval_batch_size: Optional[int] = None, eval_max_examples: Optional[int] = None, scoring: str = "auto",
          seed: int = 0, checkpoint_period: int = 100, keep_last: int = 2, keep_best: int = 1,
          best_metric: Optional[str] = None, num_partitions: int = 1, skip_malformed: bool = False,
          show_progress: bool = True) -> dict[str, Any]:
  """Trains `model`'s PEFT parameters on a task; returns the final train (and eval/...) metrics.

  Writes MODEL_DIR/config.gin (the resolved gin config), checkpoints/, train/ and eval/ TensorBoard runs,
  metrics.jsonl, and with an eval split the evaluator's predictions.jsonl / metrics.json under eval/.
  `eval_split=None` turns evaluation off; `eval_period=0` evaluates only at the end.
  """
  check_task_name(mixture_or_task_name)
  os.makedirs(model_dir, exist_ok=True)
  trainer.write_text(os.path.join(model_dir, "config.gin"), gin.config_str())
  evaluate = None
  if eval_split:
    from prompt_tuning_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top
    evaluate = evaluator.make_evaluate_fn(
        task_name=mixture_or_task_name, split=eval_split, feature_lengths=task_feature_lengths,
        batch_size=eval_batch_size or batch_size, data_dir=data_dir, scoring=scoring,
        max_examples=eval_max_examples, output_dir=os.path.join(model_dir, "eval"))
  metadata = {**model_metadata(model), "task": mixture_or_task_name, "feature_lengths": dict(task_feature_lengths),
              "initial_checkpoint_path": initial_checkpoint_path}
  data = train_data.task_train_data(mixture_or_task_name, task_feature_lengths, split=train_split, seed=seed,
                                    data_dir=data_dir, skip_malformed=skip_malformed)
  return trainer.train(
      model=model, model_dir=model_dir, train_steps=train_steps, batch_size=batch_size, train_data=data,
      evaluate=evaluate, initial_checkpoint_path=initial_checkpoint_path, optimizer=_gin_optimizer(),
      mask_fn=configured(trainable.trainable_mask), eval_period=eval_period, checkpoint_period=checkpoint_period,
      keep_last=keep_last, keep_best=keep_best, best_metric=best_metric, seed=seed,
      num_partitions=num_partitions, metadata=metadata, show_progress=show_progress,
      prepare_params=prepare_prompt(seed))


def restore_params(model: nn.Module, checkpoint_dir: str, initial_checkpoint_path: Optional[str],
                   step: Any = "latest", seed: int = 0) -> tuple[dict, int]:
  """(full params, restored step): the frozen base from `initial_checkpoint_path`, the trained leaves from a
  run's MODEL_DIR (or its checkpoints/ folder); `step` is 'latest', 'best' or a step number.

  Every leaf saved in the checkpoint must be a parameter of `model` with the same shape (else one error
  naming the path and both shapes).
  """
  directory = checkpoint_dir if os.path.basename(os.path.normpath(checkpoint_dir)) == "checkpoints" else \
      os.path.join(checkpoint_dir, "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints folder at {directory} (train first, or point CHECKPOINT_DIR at "
                            f"a training run's MODEL_DIR)")
  base = flatten_params(trainer.initial_params(model, seed, initial_checkpoint_path))
  trained, found = PeftCheckpointManager(directory).restore_trainable(step)
  for path, value in flatten_params(trained).items():
    if path not in base:
      raise ValueError(f"{directory} step {found}: {path} is not a parameter of the configured model")
    if tuple(base[path].shape) != tuple(value.shape):
      raise ValueError(f"{directory} step {found}: {path} has shape {tuple(value.shape)}, the configured "
                       f"model expects {tuple(base[path].shape)}")
    base[path] = jnp.asarray(value, base[path].dtype)
  return unflatten_params(base), found
