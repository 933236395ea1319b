"""Where task data comes from: a local directory of official files, or TFDS.

Resolution, first match wins (`resolve`):
  1. an explicit directory: a source's own `data_dir`, or the process-wide / scoped override set with
     `set_data_dir` / `using_data_dir` (the trainer passes its `DATA_DIR` gin macro there);
  2. the environment variable `PROMPT_TUNING_DATA_DIR`;
  3. `../shared/data` next to the repository (found from this file's location, not the working directory),
     when that directory exists;
  4. TFDS.
Any of 1-2 may be the string 'tfds' to force TFDS even when a local directory exists.
The same settings carry `skip_malformed` (skip and count malformed lines instead of raising; tasks/readers.py).

The layout of a local directory (one folder per benchmark, the official file names) is documented in
tasks/benchmarks.py, tasks/ner.py and /work/shared/data/README.md.
"""
import contextlib
import dataclasses
import os
from typing import Iterator

DATA_DIR_ENV = "PROMPT_TUNING_DATA_DIR"
TFDS = "tfds"  # the value that selects TFDS in any setting
# <repo>/tasks/data_dir.py -> <repo>/../shared/data
SHARED_DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "shared", "data")

_override: str | None = None
_skip_malformed = False


@dataclasses.dataclass(frozen=True)
class Resolved:
  """The outcome of `resolve`.

  Attributes:
    path: the local directory, or None for TFDS.
    origin: which setting decided, in words (used in error messages).
  """
  path: str | None
  origin: str


def set_data_dir(path: str | None, skip_malformed: bool = False) -> None:
  """Sets the process-wide data dir (what the trainer does with `DATA_DIR`; None clears it) and whether
  local readers skip malformed lines (counted and logged) instead of raising."""
  global _override, _skip_malformed
  _override, _skip_malformed = path, skip_malformed


@contextlib.contextmanager
def using_data_dir(path: str | None = None, skip_malformed: bool | None = None) -> Iterator[None]:
  """Scoped `set_data_dir`; a None argument leaves that setting as it is; both are restored on exit."""
  global _override, _skip_malformed
  previous = _override, _skip_malformed
  _override = path if path is not None else _override
  _skip_malformed = skip_malformed if skip_malformed is not None else _skip_malformed
  try:
    yield
  finally:
    _override, _skip_malformed = previous


def skip_malformed() -> bool:
  """The current process-wide / scoped skip_malformed setting (a source's own setting wins)."""
  return _skip_malformed


def resolve(explicit: str | None = None) -> Resolved:
  """Resolves the data dir (module docstring); `explicit` is a source's own setting."""
  for value, origin in ((explicit, "the data_dir argument"), (_override, "DATA_DIR (set_data_dir)"),
                        (os.environ.get(DATA_DIR_ENV) or None, f"${DATA_DIR_ENV}")):
    if value is not None:
      return Resolved(None if value == TFDS else os.path.expanduser(value), origin)
  if os.path.isdir(SHARED_DATA_DIR):
    return Resolved(SHARED_DATA_DIR, "../shared/data next to the repository")
  return Resolved(None, "the default (no data dir set)")
