"""Files a run writes besides orbax's checkpoints: atomic (a temporary file, then a rename) and, on a multi-host
run, written by process 0 only, so hosts never race on MODEL_DIR (orbax coordinates its own checkpoint writes)."""
import json
import os
from typing import Any

import jax
import numpy as np


def is_primary_host() -> bool:
  """True on the process that writes a run's files (process 0; the only one on a single host)."""
  return jax.process_index() == 0


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through `path.tmp` and an atomic rename; nothing on a non-primary host."""
  if not is_primary_host():
    return
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, payload: Any) -> None:
  """`write_text` of indented JSON; numpy and jax arrays and scalars become lists and numbers."""
  write_text(path, json.dumps(payload, indent=2, default=lambda x: np.asarray(x).tolist()))
