"""One training job per MODEL_DIR: a second `train` on a directory a live job holds is refused.

  with lock.hold_model_dir(model_dir):   # ValueError naming the directory and the holder's pid
    ...train...

The holder is an exclusive `fcntl.flock` on MODEL_DIR/.lock, taken by process 0 of the job (the process that
writes the run's files), which also writes its pid there. The kernel drops the lock when the holder exits, even
on SIGKILL, so a killed job's directory never blocks its resume; the pid left in the file is only a name for
the message. Process 0's answer is broadcast, so every process of a refused multi-process job stops with the
same one-line error, and the processes of one job never refuse each other. NOTE: flock is advisory and local
to one machine's kernel (and NFS clients that map it to byte-range locks); two jobs on different machines
sharing a network MODEL_DIR are not detected.
"""
import contextlib
import fcntl
import os
from typing import Iterator

import jax
import numpy as np

LOCK_FILE = ".lock"


def _try_lock(path: str):
  """-> (open file holding the lock, 0) or (None, the holder's pid as written in the file; -1 if unreadable)."""
  handle = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    text = handle.read().strip()
    handle.close()
    return None, int(text) if text.isdigit() else -1
  handle.seek(0)
  handle.truncate()
  handle.write(f"{os.getpid()}\n")
  handle.flush()
  return handle, 0


def _broadcast(value: int) -> int:
  """Process 0's `value` on every process."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


@contextlib.contextmanager
def hold_model_dir(model_dir: str) -> Iterator[None]:
  """Holds `model_dir` for the body (module docstring); ValueError when a live job holds it."""
  os.makedirs(model_dir, exist_ok=True)
  path = os.path.join(model_dir, LOCK_FILE)
  handle, holder = _try_lock(path) if jax.process_index() == 0 else (None, 0)
  holder = _broadcast(holder)
  if holder:
    raise ValueError(f"MODEL_DIR {model_dir} is in use by another training job (pid {holder}, lock {path}); "
                     f"wait for it, stop it, or choose another MODEL_DIR")
  try:
    yield
  finally:
    if handle is not None:
      handle.close()  # releases the lock; the pid stays as a harmless name
