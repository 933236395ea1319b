"""gin-configured runs with t5x's conventions: `runs.train`, `runs.evaluate`, `runs.infer`.

  python -m prompt_tuning_jax.train --gin_file=models/minilm.gin --gin_file=methods/lora.gin \
      --gin_file=runs/finetune.gin --gin.MODEL_DIR="'/tmp/run'" --gin.MIXTURE_OR_TASK_NAME="'bert_glue_sst2'"

gin/runs/*.gin bind these functions' arguments to t5x's macros (MODEL, MODEL_DIR, MIXTURE_OR_TASK_NAME,
TASK_FEATURE_LENGTHS, BATCH_SIZE, TRAIN_STEPS, INITIAL_CHECKPOINT_PATH, EVAL_PERIOD, DATA_DIR); a training run's
evaluation and checkpoint options are records of their own (`runs.Evaluation`, `peft_io.Checkpointing`). The method's
gin file binds what is its own: the `OPTIMIZER` macro (required; train/optimizers.py lists each method's), an
`INIT_STEP` macro when its init needs the frozen base (`prepare_params`), and the trainable mask
(`trainable.trainable_mask`, the one source of truth for what trains).
"""
import dataclasses
import functools
import difflib
import logging
import os
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import seqio

from prompt_tuning_jax.checkpoints.peft_io import Checkpointing, PeftCheckpointManager
from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning_jax.gin_utils import configured, configured_macro
from prompt_tuning_jax.models import slots as slots_lib
from prompt_tuning_jax.peft import trainable
from prompt_tuning_jax.train import data as train_data
from prompt_tuning_jax.train import lock, outputs, partitioning, trainer
from prompt_tuning_jax.train.optimizers import gin_optimizer
from tasks import buckets as buckets_lib
from tasks import vocabularies

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
  return {"model": type(model).__name__, "config": dataclasses.asdict(model.config),
          "methods": slots_lib.factory_names(getattr(model, "slots", None))}


def input_vocabulary(task_name: str) -> seqio.Vocabulary:
  features = seqio.get_mixture_or_task(task_name).output_features
  return (features.get("inputs") or features.get("input_ids") or next(iter(features.values()))).vocabulary


def check_vocabulary(task_name: str, initial_checkpoint_path: Optional[str]) -> None:
  """Before anything starts: a T5 task's default vocabulary becomes the checkpoint's spiece.model when
  INITIAL_CHECKPOINT_PATH is a HF directory holding one, and an unreadable vocabulary file fails in one line."""
  vocabulary = input_vocabulary(task_name)
  if isinstance(vocabulary, vocabularies.T5Vocabulary):
    vocabularies.use_checkpoint_vocabulary(initial_checkpoint_path)
    vocabularies.check_t5_vocabulary(vocabulary.sentencepiece_model_file)


def vocabulary_metadata(task_name: str) -> dict[str, Any]:
  """The class and file of the task's input vocabulary (SentencePiece model or WordPiece vocab.txt)."""
  vocabulary = input_vocabulary(task_name)
  path = getattr(vocabulary, "sentencepiece_model_file", None) or getattr(vocabulary, "vocab_path", None)
  return {"class": type(vocabulary).__name__, "path": path, "vocab_size": vocabulary.vocab_size}




@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What a training run evaluates, and how often (gin: `runs.Evaluation.<field>`).

  Attributes:
    split: the split scored (evaluation/evaluator.py); None turns evaluation off.
    period: evaluate every this many steps (gin: EVAL_PERIOD); 0 = only at the end.
    batch_size: None = the training batch size. max_examples: None = the whole split.
    scoring: 'auto', 'rank', 'generate' or 'classifier' (evaluation/evaluator.py).
  """
  split: Optional[str] = "validation"
  period: int = 0
  batch_size: Optional[int] = None
  max_examples: Optional[int] = None
  scoring: str = "auto"


def prepare_params(params: dict, seed: int) -> dict:
  """Full params (frozen base loaded) -> the params training starts from: the gin `INIT_STEP` macro, a method's
  init that needs the frozen base, `init_step(params, rng=key(seed + 2))` (seed: init, seed + 1: dropout), e.g.
  methods/prompt_tuning.gin's `INIT_STEP = @prompt_params.initialize_prompt`; unchanged when no file binds one."""
  init_step = configured_macro("INIT_STEP", default=None)
  return params if init_step is None else init_step(params, rng=jax.random.key(seed + 2))


@gin.configurable
def train(*, model: nn.Module = gin.REQUIRED, model_dir: str = gin.REQUIRED,
          mixture_or_task_name: str = gin.REQUIRED, task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          batch_size: int = gin.REQUIRED, train_steps: int = gin.REQUIRED,
          initial_checkpoint_path: Optional[str] = None, data_dir: Optional[str] = None, train_split: str = "train",
          evaluation: Evaluation = Evaluation(), checkpointing: Checkpointing = Checkpointing(), seed: int = 0,
          prompt_seed: Optional[int] = None, data_seed: Optional[int] = None, num_partitions: int = 1,
          skip_malformed: bool = False, show_progress: bool = True,
          buckets: Optional[buckets_lib.LengthBuckets] = buckets_lib.LengthBuckets()) -> dict[str, Any]:
  """Trains `model`'s PEFT parameters on a task; returns the final train (and eval/...) metrics.

  Writes MODEL_DIR/config.gin (the resolved gin config), checkpoints/, train/ and eval/ TensorBoard runs,
  metrics.jsonl, and with an eval split the evaluator's predictions.jsonl / metrics.json under eval/; holds
  MODEL_DIR/.lock while it runs (a second job on the directory is refused, train/lock.py).
  `evaluation` (`Evaluation`): the split scored (None: no evaluation), every `period` steps (0: only at the end);
  `checkpointing` (checkpoints/peft_io.py `Checkpointing`): the save period and which checkpoints are kept.
  Seeds: `seed` draws every initialised leaf (and dropout); `prompt_seed` the method's init step
  (`prepare_params`: e.g. the prompt init), `data_seed` the data order (both default to `seed`). Prompt
  ensembles vary only these two, so the K runs share all else.
  `buckets`: length buckets for training and evaluation batches (tasks/buckets.py; None = every batch padded
  to TASK_FEATURE_LENGTHS); the step compiles once per bucket, and the run log counts the compiles.
  """
  check_task_name(mixture_or_task_name)
  check_vocabulary(mixture_or_task_name, initial_checkpoint_path)
  optimizer = gin_optimizer()  # a missing OPTIMIZER fails before MODEL_DIR is touched
  with lock.hold_model_dir(model_dir):  # a second job on a live MODEL_DIR is refused (train/lock.py)
    outputs.write_text(os.path.join(model_dir, "config.gin"), gin.config_str())
    evaluate = None
    if evaluation.split:
      from prompt_tuning_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top
      evaluate = evaluator.make_evaluate_fn(
          task_name=mixture_or_task_name, split=evaluation.split, feature_lengths=task_feature_lengths,
          batch_size=evaluation.batch_size or batch_size, data_dir=data_dir, scoring=evaluation.scoring,
          max_examples=evaluation.max_examples, output_dir=os.path.join(model_dir, "eval"), buckets=buckets)
    metadata = {**model_metadata(model), "task": mixture_or_task_name, "feature_lengths": dict(task_feature_lengths),
                "initial_checkpoint_path": initial_checkpoint_path,
                "vocabulary": vocabulary_metadata(mixture_or_task_name)}
    prompt_seed = seed if prompt_seed is None else prompt_seed
    data_seed = seed if data_seed is None else data_seed
    metadata.update(prompt_seed=prompt_seed, data_seed=data_seed)
    data = train_data.task_train_data(mixture_or_task_name, task_feature_lengths, split=train_split, seed=data_seed,
                                      data_dir=data_dir, skip_malformed=skip_malformed, buckets=buckets)
    return trainer.train(
        model=model, model_dir=model_dir, train_steps=train_steps, batch_size=batch_size, train_data=data,
        evaluate=evaluate, initial_checkpoint_path=initial_checkpoint_path, optimizer=optimizer,
        mask_fn=configured(trainable.trainable_mask), eval_period=evaluation.period, checkpointing=checkpointing,
        seed=seed, num_partitions=num_partitions, metadata=metadata, show_progress=show_progress,
        prepare_params=functools.partial(prepare_params, seed=prompt_seed))


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
  manager = PeftCheckpointManager(directory)
  trained, found = manager.restore_trainable(step)
  seed = manager.read_metadata(found).get("seed", seed)  # untrained seeded leaves as in training
  base = flatten_params(trainer.initial_params(model, seed, initial_checkpoint_path))
  for path, value in flatten_params(trained).items():
    if path not in base:
      raise ValueError(f"{directory} step {found}: {path} is not a parameter of the configured model")
    if tuple(base[path].shape) != tuple(value.shape):
      raise ValueError(f"{directory} step {found}: {path} has shape {tuple(value.shape)}, the configured "
                       f"model expects {tuple(base[path].shape)}")
    base[path] = jnp.asarray(value, base[path].dtype)
  return unflatten_params(base), found


@gin.configurable
def evaluate(*, model: nn.Module = gin.REQUIRED, checkpoint_dirs: Sequence[str] = gin.REQUIRED,
             mixture_or_task_name: str = gin.REQUIRED, task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
             batch_size: int = gin.REQUIRED, output_dir: str = gin.REQUIRED,
             initial_checkpoint_path: Optional[str] = None, split: str = "validation",
             checkpoint_step: Any = "latest", data_dir: Optional[str] = None, scoring: str = "auto",
             num_beams: int = 1, max_decode_length: Optional[int] = None, max_examples: Optional[int] = None,
             seed: int = 0, buckets: Optional[buckets_lib.LengthBuckets] = buckets_lib.LengthBuckets(),
             num_partitions: int = 1) -> dict[str, Any]:
  """Evaluates one trained run, or a prompt ensemble of several, on a split; writes OUTPUT_DIR's
  predictions.jsonl and metrics.json and returns the metrics.

  checkpoint_dirs: training MODEL_DIRs. One: its `checkpoint_step` ('latest', 'best' or a number) is scored
    (rank / generate / classifier, evaluation/evaluator.py). K > 1: the runs are stacked into one model that
    scores every batch for all K in one forward (evaluation/ensemble.py `stack_runs`); the report holds each
    run's metrics, their mean and best, and the majority-vote and mean-log-prob ensembles.
  With several devices (or processes) the params are placed on a (data, model) mesh of `num_partitions` model
  shards and each batch's rows are split over its data axis (evaluation/evaluator.py).
  """
  from prompt_tuning_jax.evaluation import ensemble, evaluator  # pylint: disable=g-import-not-at-top
  check_task_name(mixture_or_task_name)
  check_vocabulary(mixture_or_task_name, initial_checkpoint_path)
  dirs = [checkpoint_dirs] if isinstance(checkpoint_dirs, str) else list(checkpoint_dirs)
  common = dict(task_name=mixture_or_task_name, split=split, feature_lengths=dict(task_feature_lengths),
                batch_size=batch_size, data_dir=data_dir, scoring=scoring, max_examples=max_examples,
                output_dir=output_dir, buckets=buckets)
  restored = [restore_params(model, d, initial_checkpoint_path, checkpoint_step, seed) for d in dirs]
  for directory, (_, step) in zip(dirs, restored):
    log.info("evaluating %s step %d on %s:%s", directory, step, mixture_or_task_name, split)
  mesh = partitioning.create_mesh(num_partitions)
  mesh, place = (None, lambda _, params: params) if mesh.size == 1 else (
      mesh, lambda m, params: trainer.place_params(m, mesh, params))
  if len(dirs) == 1:
    metrics = evaluator.evaluate(model, place(model, restored[0][0]), num_beams=num_beams,
                                 max_decode_length=max_decode_length, mesh=mesh, **common)
  else:
    stacked_model, stacked = ensemble.stack_runs(model, [params for params, _ in restored], dirs)
    metrics = evaluator.evaluate_ensemble_dataset(stacked_model, place(stacked_model, stacked), len(dirs), mesh=mesh,
                                                  **common)
  metrics = {**metrics, "checkpoints": {d: step for d, (_, step) in zip(dirs, restored)}}
  outputs.write_json(os.path.join(output_dir, "metrics.json"), metrics)
  return metrics



@gin.configurable
def infer(*, checkpoint_dir: str = gin.REQUIRED, **kwargs) -> dict[str, Any]:
  """Predictions of one trained run on a split (OUTPUT_DIR/predictions.jsonl); `evaluate`'s other arguments.

  The metrics it also writes are meaningful only where the split has labels (e.g. not GLUE's test files).
  """
  return evaluate(checkpoint_dirs=[checkpoint_dir], **kwargs)
