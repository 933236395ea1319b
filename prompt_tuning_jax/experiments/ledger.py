"""A committed record of finished runs, so a table outlives the machine (and the out_dir) that trained it.

  book = ledger.Ledger("docs/results/table_cpu.jsonl")
  book.get(key)            # the result.json of a finished run with this configuration, or None
  book.add(result, key)    # appends one line (no-op when the key is there already)

One JSON object per line: a run's result.json (training.train) made portable (its MODEL_DIR binding dropped,
INITIAL_CHECKPOINT_PATH reduced to the folder's name), plus 'config_key' and 'code'. The key is a hash of
everything gin configures the run with: the text of each gin file and of what it includes, and the portable
bindings (task, lengths, budget, seed, learning rate, head variant). A run whose gin files or bindings change
gets another key, so an entry never stands in for a run it did not train; 'code' names the commit that trained
it (null where unknown: a run imported from an out_dir whose result.json predates the field). Lines are
appended with one write each (O_APPEND), so two processes can add runs to the same file.
"""
import hashlib
import json
import os
import subprocess
from typing import Any, Optional, Sequence

from prompt_tuning_jax import gin_utils

_DROPPED = ("MODEL_DIR",)
_BASENAME = ("INITIAL_CHECKPOINT_PATH",)


def portable_bindings(bindings: Sequence[str]) -> list[str]:
  """`bindings` without the machine's paths: MODEL_DIR dropped, INITIAL_CHECKPOINT_PATH = its folder's name."""
  out = []
  for binding in bindings:
    name, _, value = binding.partition("=")
    name = name.strip()
    if name in _DROPPED:
      continue
    if name in _BASENAME:
      path = value.strip().strip("'\"")
      binding = f"{name} = {os.path.basename(path.rstrip('/'))!r}" if path != "None" else binding
    out.append(binding)
  return out


def config_key(gin_files: Sequence[str], bindings: Sequence[str]) -> str:
  """A hash of the gin files' texts (with their includes, gin_utils.gin_texts) and the portable bindings."""
  digest = hashlib.sha256()
  for name in gin_files:
    for text in gin_utils.gin_texts(gin_utils.resolve_gin_file(name)):
      digest.update(text.encode())
  digest.update(json.dumps(portable_bindings(bindings)).encode())
  return digest.hexdigest()[:16]


def code_version() -> Optional[str]:
  """The commit of the code running (`git describe --always --dirty` of this package's checkout), or None."""
  try:
    return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True, text=True,
                          check=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
  except (OSError, subprocess.CalledProcessError):
    return None


class Ledger:
  """The finished runs recorded in `path` (a .jsonl file; missing = empty), by config_key."""

  def __init__(self, path: str):
    self.path = path
    self._entries: dict[str, dict[str, Any]] = {}
    self._size = 0
    self._load()

  def _load(self) -> None:
    """(Re)reads the file: another process may have appended since (results.py runs two at a time)."""
    if not os.path.isfile(self.path):
      return
    with open(self.path) as f:
      text = f.read()
    for number, line in enumerate(text.splitlines(), 1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
        self._entries[entry["config_key"]] = entry
      except (ValueError, KeyError) as error:
        raise ValueError(f"{self.path}:{number}: not a ledger line (a JSON object with 'config_key'): "
                         f"{error}") from None
    self._size = len(text.encode())

  def __len__(self) -> int:
    return len(self._entries)

  def get(self, key: str) -> Optional[dict[str, Any]]:
    """The recorded result of the run configured as `key`, or None."""
    return self._entries.get(key)

  def add(self, result: dict[str, Any], key: str, code: Optional[str] = None) -> bool:
    """Records `result` (a result.json) under `key` with the commit `code`; False when the key is there already."""
    if os.path.isfile(self.path) and os.path.getsize(self.path) != self._size:
      self._load()  # another process appended: do not record its runs twice
    if key in self._entries:
      return False
    entry = {**result, "gin_bindings": portable_bindings(result.get("gin_bindings", ())), "config_key": key,
             "code": code}
    line = json.dumps(entry, sort_keys=True) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line.encode())  # one write: appends from two processes do not interleave
    finally:
      os.close(fd)
    self._size += len(line.encode())
    self._entries[key] = entry
    return True
