"""One training run of the results table: gin files + bindings -> runs.train -> MODEL_DIR/result.json.

A run's MODEL_DIR holds everything runs.train writes (config.gin, checkpoints/, metrics.jsonl, eval/metrics.json)
plus result.json, written last: a directory with result.json is finished and is skipped (a crashed run without it
resumes from its checkpoint when the same command runs again).
"""
import contextlib
import dataclasses
import json
import os
import statistics
import time
from typing import Any, Optional, Sequence

import gin

import tasks  # pylint: disable=unused-import  (registers every task)
from prompt_tuning_jax import gin_utils, minilm, params, runs
from prompt_tuning_jax.experiments import config, ledger, task_variants
from prompt_tuning_jax.train import outputs
from tasks import registry

COMPILE_STEPS = 2
"""The first steps compile; step time is the median over the steps after them."""


@dataclasses.dataclass(frozen=True)
class Run:
  """task x method x seed, optionally at a learning rate of the method's sweep and a head variant
  (config.HEAD_VARIANTS); `directory` is its MODEL_DIR under the output folder."""
  task: str
  method: str
  seed: int
  learning_rate: Optional[float] = None
  variant: Optional[str] = None

  @property
  def directory(self) -> str:
    parts = [self.task, self.method] + ([f"head_{self.variant}"] if self.variant else []) + (
        [f"lr_{self.learning_rate:g}"] if self.learning_rate is not None else [])
    return os.path.join(*parts, f"seed_{self.seed}")

  def bindings(self) -> list[str]:
    """The run's own bindings: its learning rate (the method's sweep macro) and head variant."""
    method = config.METHODS[self.method]
    lr = [] if self.learning_rate is None else [f"{method.sweep_macro} = {self.learning_rate!r}"]
    return lr + list(config.HEAD_VARIANTS[self.variant] if self.variant else ())


def task_name(task: str, holdout: bool = False) -> str:
  """The task the runs train on: BoolQ's val-split variant (task_variants.py), else the task itself; with
  `holdout`, its variant that trains without the holdout rows and evaluates on them."""
  spec = task_variants.boolq_valsplit(config.BOOLQ_TRAIN_ROWS) if task == config.BOOLQ else None
  if holdout:
    return task_variants.register_holdout(task, config.TASKS[task].holdout_fraction, spec=spec)
  return task_variants.register_valsplit(task, config.BOOLQ_TRAIN_ROWS) if task == config.BOOLQ else task


def model_bindings(run: Run, setting: config.Setting, initial_checkpoint: Optional[str] = None) -> list[str]:
  """The bindings training and evaluation share: backbone, head size, task, lengths, base checkpoint, method
  options; `initial_checkpoint` overrides the MiniLM directory."""
  name = task_name(run.task, setting.holdout)
  labels = registry.label_strings(name)
  checkpoint = initial_checkpoint or (minilm.minilm_dir() if setting.use_minilm else None)
  bindings = [*setting.backbone_bindings, f"NUM_LABELS = {len(labels)}", f"MIXTURE_OR_TASK_NAME = '{name}'",
              f"TASK_FEATURE_LENGTHS = {{'input_ids': {setting.length(run.task)}}}",
              f"INITIAL_CHECKPOINT_PATH = {checkpoint!r}"]
  if run.method == "prompt_tuning_class_label":
    bindings.append(f"CLASS_LABELS = {labels!r}")
  if config.TASKS[run.task].single_sentence:
    bindings += config.METHODS[run.method].single_sentence_bindings
  return bindings


def gin_config(run: Run, setting: config.Setting, model_dir: str, extra_files: Sequence[str] = (),
               extra: Sequence[str] = (), initial_checkpoint: Optional[str] = None) -> tuple[list[str], list[str]]:
  """(gin files, bindings) of one training run; `extra_files` go after the method file."""
  bindings = model_bindings(run, setting, initial_checkpoint) + [
      f"MODEL_DIR = '{model_dir}'", f"BATCH_SIZE = {setting.batch_size}", f"TRAIN_STEPS = {setting.steps(run.task)}",
      f"EVAL_PERIOD = {setting.eval_period}", f"runs.train.seed = {run.seed}",
      f"runs.Evaluation.max_examples = {setting.eval_max_examples}", *run.bindings(), *extra]
  files = ["models/minilm.gin", config.METHODS[run.method].gin_file, *extra_files, "results/run.gin"]
  return files, bindings


def train_rows(metrics_jsonl: str) -> list[dict[str, Any]]:
  """The train steps' rows of a run's metrics.jsonl, one per step in step order. summaries.SummaryWriter drops
  an interrupted attempt's rows when the run resumes; a file written before it did holds the redone steps twice,
  and the last row of a step is the attempt that finished the run."""
  by_step: dict[int, dict[str, Any]] = {}
  with open(metrics_jsonl) as f:
    for row in map(json.loads, f):
      if row["split"] == "train":
        by_step[row["step"]] = row
  return [by_step[step] for step in sorted(by_step)]


def step_seconds(rows: list[dict[str, Any]], batch_size: int) -> Optional[float]:
  """Median seconds per train step after the compiling ones, from the train rows' examples_per_second."""
  times = [batch_size / row["examples_per_second"] for row in rows]
  timed = times[COMPILE_STEPS:] or times[-1:]
  return statistics.median(timed) if timed else None


def train_accuracy_fifths(rows: list[dict[str, Any]]) -> list[float]:
  """Mean train-batch accuracy (%) over each fifth of the train rows (a flat last two = trained to a plateau at
  this budget); fewer than 5 rows: []."""
  fifth = len(rows) // 5
  return [100 * statistics.mean(row["accuracy"] for row in rows[i * fifth:(i + 1) * fifth]) for i in range(5)] \
      if fifth else []


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


class RunInUse(RuntimeError):
  """A live process holds the run's MODEL_DIR (claimed)."""


@contextlib.contextmanager
def claimed(model_dir: str):
  """Holds `model_dir/running.pid` while this process trains there: a second process on the same run gets
  RunInUse instead of interleaving its writes (results.train_plan moves on to its next run; a notebook stops);
  a lock left by a killed process is taken over."""
  os.makedirs(model_dir, exist_ok=True)
  lock = os.path.join(model_dir, "running.pid")
  while True:
    try:
      fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # atomic: one process wins
      break
    except FileExistsError:
      if _lock_owner_alive(lock):
        raise RunInUse(f"{model_dir} is being trained by process {open(lock).read().strip()} (running.pid); "
                       f"wait for it, or remove the file if that process is not this run") from None
      os.remove(lock)  # stale: its process is gone
  with os.fdopen(fd, "w") as f:
    f.write(str(os.getpid()))
  try:
    yield
  finally:
    os.remove(lock)


def _lock_owner_alive(lock: str) -> bool:
  """Whether the pid in `lock` names a live process (an empty or unreadable file counts as stale)."""
  try:
    with open(lock) as f:
      owner = int(f.read().strip())
    os.kill(owner, 0)  # signal 0: only checks that the process exists
  except (FileNotFoundError, ValueError, ProcessLookupError):
    return False
  except PermissionError:
    return True  # alive, owned by another user
  return owner > 0


def finished(run: Run, setting: config.Setting, out_dir: str,
             book: Optional[ledger.Ledger] = None) -> Optional[dict[str, Any]]:
  """The run's result: its result.json under out_dir (recorded into `book` when it matches the run's current
  configuration), else `book`'s entry for that configuration; None when neither has it."""
  model_dir = os.path.abspath(os.path.join(out_dir, run.directory))
  return _recorded(run, model_dir, *gin_config(run, setting, model_dir), book)


def _recorded(run: Run, model_dir: str, files: list[str], bindings: list[str],
              book: Optional[ledger.Ledger]) -> Optional[dict[str, Any]]:
  """finished() for a run configured with `files` / `bindings`."""
  if os.path.isfile(os.path.join(model_dir, "result.json")):
    result = read_result(model_dir)
    if book is not None:
      same = (result.get("gin_files") == files and
              ledger.portable_bindings(result.get("gin_bindings", ())) == ledger.portable_bindings(bindings))
      if same:
        book.add(result, ledger.config_key(files, bindings), result.get("code"))
      else:
        print(f"not recorded in {book.path}: {run.directory}/result.json was trained with other gin files or "
              f"bindings than the run's now", flush=True)
    return result
  return None if book is None else book.get(ledger.config_key(files, bindings))


def read_result(model_dir: str) -> dict[str, Any]:
  """model_dir/result.json, with train_accuracy_fifths and step_seconds taken from its metrics.jsonl where that
  is there (the source of both: a result.json written before train_rows kept one row per step, or before the
  field existed, is read right)."""
  result = read_json(os.path.join(model_dir, "result.json"))
  metrics_jsonl = os.path.join(model_dir, "metrics.jsonl")
  if os.path.isfile(metrics_jsonl):
    rows = train_rows(metrics_jsonl)
    result["train_accuracy_fifths"] = train_accuracy_fifths(rows)
    if "batch_size" in result:
      result["step_seconds"] = step_seconds(rows, result["batch_size"])
  return result


def train(run: Run, setting: config.Setting, out_dir: str, extra_files: Sequence[str] = (), extra: Sequence[str] = (),
          initial_checkpoint: Optional[str] = None, directory: Optional[str] = None,
          book: Optional[ledger.Ledger] = None) -> dict[str, Any]:
  """Trains one run unless it has finished (finished(): its result.json, else `book`'s entry for its configuration);
  returns the result (also written to result.json, and recorded into `book`).

  `extra_files` / `extra`: more gin files and bindings (gin_config); `directory`: MODEL_DIR relative to out_dir
  (default `run.directory`).

  Result: task, method, seed, model_dir (relative to out_dir), train_steps, batch_size, length, metrics (the
  last evaluation: eval/metrics.json), total / trainable parameters and trainable_percent (params.py, abstract
  shapes), step_seconds (median), train_accuracy_fifths, wall_seconds, gin_files, gin_bindings, code (the commit:
  ledger.code_version).
  """
  relative = directory or run.directory
  model_dir = os.path.abspath(os.path.join(out_dir, relative))
  files, bindings = gin_config(run, setting, model_dir, extra_files, extra, initial_checkpoint)
  done = _recorded(run, model_dir, files, bindings, book)
  if done is not None:
    where = "result.json" if os.path.isfile(os.path.join(model_dir, "result.json")) else book.path
    print(f"skip {relative}: finished ({where})", flush=True)
    return done
  print(f"run  {relative}", flush=True)
  start = time.perf_counter()
  report = params.parameter_report(files, bindings)
  with claimed(model_dir):
    gin_utils.parse_gin(files, bindings)
    gin.get_configurable(runs.train)()
  metrics = read_json(os.path.join(model_dir, "eval", "metrics.json"))
  rows = train_rows(os.path.join(model_dir, "metrics.jsonl"))
  result = {"task": run.task, "method": run.method, "seed": run.seed, "model_dir": relative,
            "train_steps": setting.steps(run.task), "batch_size": setting.batch_size,
            "length": setting.length(run.task), "learning_rate": run.learning_rate, "variant": run.variant,
            "holdout": setting.holdout, "metrics": metrics,
            "total_parameters": report["total"], "trainable_parameters": report["trainable"],
            "trainable_percent": report["trainable_percent"],
            "step_seconds": step_seconds(rows, setting.batch_size), "train_accuracy_fifths": train_accuracy_fifths(rows),
            "wall_seconds": round(time.perf_counter() - start, 1), "gin_files": files, "gin_bindings": bindings,
            "code": ledger.code_version()}
  outputs.write_json(os.path.join(model_dir, "result.json"), result)
  if book is not None:
    book.add(result, ledger.config_key(files, bindings), result["code"])
  return result
