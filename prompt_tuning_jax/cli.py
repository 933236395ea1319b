"""The entry points' shared main: t5x-style gin flags -> one gin-configured run function.

  python -m prompt_tuning_jax.train --gin_file=F ... [--gin.NAME=VALUE ...] [--multiprocess]
  python -m prompt_tuning_jax.eval  ...   python -m prompt_tuning_jax.infer ...

Multi-process (TPU pods, multi-node GPU, or N CPU processes under `python -m prompt_tuning_jax.launch`):
`jax.distributed.initialize()` runs first when `--multiprocess` is given or the launcher set
JAX_COORDINATOR_ADDRESS; every process then runs the same command and feeds its rows of each global batch.
User errors (a wrong gin file, binding, task name, missing data) print one line and exit with status 1, a diverged
run (NaN/Inf loss) with status 3; anything else is a bug and keeps its traceback.
"""
import logging
import os
import sys
from typing import Callable, Sequence

import gin

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before tensorflow loads: no C++ info spam

from prompt_tuning_jax import gin_utils

USER_ERRORS = (FileNotFoundError, ValueError, KeyError)


def maybe_initialize_distributed(multiprocess: bool) -> None:
  """`jax.distributed.initialize()` when `--multiprocess` is given or JAX_COORDINATOR_ADDRESS is set.

  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (set by prompt_tuning_jax.launch, or by hand)
  are passed on; where they are unset, JAX detects the cluster (TPU pods, SLURM, Open MPI, ...). CPU collectives
  run over gloo, so a multi-process job also works with CPU devices only.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if not (multiprocess or os.environ.get("JAX_COORDINATOR_ADDRESS")) or jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  number = lambda name: int(os.environ[name]) if os.environ.get(name) else None
  jax.distributed.initialize(coordinator_address=os.environ.get("JAX_COORDINATOR_ADDRESS") or None,
                             num_processes=number("JAX_NUM_PROCESSES"), process_id=number("JAX_PROCESS_ID"))
  logging.info("process %d of %d, %d local of %d devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def main(argv: Sequence[str], run: Callable[..., dict], usage: str) -> int:
  """Parses gin flags, registers the tasks, then calls the gin-configured `run`; returns the exit status."""
  files, bindings, rest = gin_utils.split_gin_args(argv)
  multiprocess = "--multiprocess" in rest
  rest = [a for a in rest if a != "--multiprocess"]
  if rest or not files:
    print(f"usage: {usage}; unexpected: {rest or 'no --gin_file'}", file=sys.stderr)
    return 2
  def call() -> dict:
    maybe_initialize_distributed(multiprocess)
    import tasks  # pylint: disable=g-import-not-at-top,unused-import  (registers every task)
    gin_utils.parse_gin(files, bindings, check_macros=True)
    result = gin.get_configurable(run)()
    logging.info("done: %s", result)
    return result
  return main_guarded(call)


def main_guarded(fn: Callable[[], object]) -> int:
  """Calls `fn`; a user error prints one line (status 1), a diverged run its message (status 3)."""
  setup_logging()
  try:
    result = fn()
  except USER_ERRORS as error:
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    # gin appends "In call to configurable 'train' (...)": noise for a user error that names its setting
    message = "\n".join(line for line in message.splitlines() if not line.strip().startswith("In call to configurable"))
    print(f"error: {type(error).__name__}: {message}", file=sys.stderr)
    return 1
  except FloatingPointError as error:  # train/trainer.py TrainingDivergedError: the message names the step
    print(f"error: {error}", file=sys.stderr)
    return 3
  return result if isinstance(result, int) else 0


def setup_logging() -> None:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger().setLevel(logging.INFO)  # also when absl installed its handler first
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save INFO lines drown the progress bar
