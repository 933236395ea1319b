"""Read and write checkpoints in google-research/t5x's layout, with no t5x install.

The layout (t5x `Checkpointer.save`, non-OCDBT; the released T5 1.1 and LM-adapted checkpoints):

  checkpoint_<step>/
    checkpoint                         msgpack (flax.serialization) of
                                       {'version': 3, 'optimizer': {'target': params, 'state': {'step': ...}}}
    target.encoder.layers_0.attention.query.kernel/   zarr v2 array (.zarray + gzip chunks)
    ...

A leaf of `target` is either an inline numpy array or a TensorStore spec dict
`{'driver': 'zarr', 'dtype': 'bfloat16', 'kvstore': {'driver': 'file', 'path': 'target.encoder...'},
'metadata': {'shape': [...], 'chunks': [...], 'compressor': {'id': 'gzip'}}}` whose path is relative to
the checkpoint directory (checkpoints written to GCS say 'gcs' and a dummy bucket; older ones put 'path'
at the top level). Version 0 files are plain flax checkpoints: the whole file is the optimizer state.
Only local paths are read (copy a gs:// checkpoint down with `gsutil -m cp -r` first). No pickle.
"""
import math
import os
import re
import shutil
import time
from typing import Any, Optional

import numpy as np
import tensorstore as ts
from flax import serialization, traverse_util

from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params

CHECKPOINT_FILE = "checkpoint"
VERSION = 3  # t5x's version: bfloat16 arrays stored natively in TensorStore.
_STEP_DIR = re.compile(r"checkpoint_(\d+)")
_SPEC_KEYS = frozenset({"driver", "kvstore", "metadata"})
_INLINE_MAX_ELEMENTS = 16  # Arrays this small stay inline in the msgpack file.
_CHUNK_BYTES = 64 * 1024 * 1024  # t5x's target chunk size.


def find_t5x_checkpoint(path: str) -> str:
  """The `checkpoint` msgpack file for `path`: that file, its checkpoint_<step> dir, or a dir of those.

  Raises:
    FileNotFoundError: `path` holds no t5x checkpoint.
  """
  if os.path.isfile(path):
    return path
  if not os.path.isdir(path):
    raise FileNotFoundError(f"No t5x checkpoint at {path}: the path does not exist")
  if os.path.isfile(os.path.join(path, CHECKPOINT_FILE)):
    return os.path.join(path, CHECKPOINT_FILE)
  steps = [int(m.group(1)) for name in os.listdir(path) if (m := _STEP_DIR.fullmatch(name))
           and os.path.isfile(os.path.join(path, name, CHECKPOINT_FILE))]
  if not steps:
    raise FileNotFoundError(f"No t5x checkpoint at {path}: neither a '{CHECKPOINT_FILE}' file "
                            f"nor checkpoint_<step>/{CHECKPOINT_FILE} subdirectories")
  return os.path.join(path, f"checkpoint_{max(steps)}", CHECKPOINT_FILE)


def _read_optimizer_state(checkpoint_file: str) -> dict[str, Any]:
  """The optimizer state dict ({'target': ..., 'state': ...}) stored in a t5x msgpack file."""
  with open(checkpoint_file, "rb") as f:
    raw = f.read()
  if raw.startswith(b"model_checkpoint_path"):
    raise ValueError(f"{checkpoint_file} is a TensorFlow checkpoint index, not a t5x msgpack checkpoint")
  try:
    contents = serialization.msgpack_restore(raw)
  except Exception as e:  # msgpack raises several unrelated types on garbage input.
    raise ValueError(f"{checkpoint_file} is not a t5x msgpack checkpoint ({type(e).__name__}: {e})") from None
  if not isinstance(contents, dict):
    raise ValueError(f"{checkpoint_file}: holds a msgpack {type(contents).__name__}, not a t5x state dict")
  state = contents if contents.get("version", 0) == 0 else contents.get("optimizer")
  if not isinstance(state, dict) or "target" not in state:
    raise ValueError(f"{checkpoint_file}: no 'target' parameters (top-level keys {sorted(contents)})")
  return state


def read_t5x_step(path: str) -> int:
  """The training step of the checkpoint at `path` (any form `find_t5x_checkpoint` accepts)."""
  checkpoint_file = find_t5x_checkpoint(path)
  step = _read_optimizer_state(checkpoint_file).get("state", {}).get("step")
  if step is not None:
    return int(np.asarray(step))
  match = _STEP_DIR.fullmatch(os.path.basename(os.path.dirname(os.path.abspath(checkpoint_file))))
  if match is None:
    raise ValueError(f"{checkpoint_file}: no state/step entry and the directory is not named checkpoint_<step>")
  return int(match.group(1))


def _is_spec(value: Any) -> bool:
  return isinstance(value, dict) and _SPEC_KEYS <= value.keys()


def _open_spec(spec: dict[str, Any], name: str, checkpoint_file: str) -> ts.Future:
  """Starts opening the array a relative spec points to; its path is resolved against the checkpoint dir."""
  relative = spec["kvstore"].get("path") or spec.get("path")
  if not relative:
    raise ValueError(f"{checkpoint_file}: the TensorStore spec of parameter {name} has no path: {spec}")
  array_dir = os.path.join(os.path.dirname(os.path.abspath(checkpoint_file)), relative.rstrip("/"))
  if not os.path.isfile(os.path.join(array_dir, ".zarray")):
    raise FileNotFoundError(f"{checkpoint_file}: parameter {name} points to {array_dir}, which holds no zarr array")
  return ts.open({"driver": spec["driver"], "kvstore": {"driver": "file", "path": array_dir}}, open=True)


def load_t5x_checkpoint(path: str, *, dtype: Optional[Any] = np.float32) -> dict:
  """Loads the parameters (`target`) of a t5x checkpoint.

  Args:
    path: the `checkpoint` file, its checkpoint_<step> directory, or a directory of checkpoint_<step>
      directories (the highest step is read).
    dtype: dtype to cast every parameter to; None keeps the stored dtype (often bfloat16).

  Returns:
    Nested dict of numpy arrays with t5x's names, e.g. params['encoder']['layers_0']['attention']['query']
    ['kernel'] of shape [embed, heads * head_dim].
  """
  checkpoint_file = find_t5x_checkpoint(path)
  target = _read_optimizer_state(checkpoint_file)["target"]
  flat = traverse_util.flatten_dict(target, sep="/", is_leaf=lambda _, value: _is_spec(value))
  opening = {name: _open_spec(value, name, checkpoint_file) for name, value in flat.items() if _is_spec(value)}
  reading = {name: future.result().read() for name, future in opening.items()}  # Reads run concurrently.
  leaves = {}
  for name, value in flat.items():
    if name not in reading:
      leaves[name] = np.asarray(value)
      continue
    leaves[name], stored_shape = reading[name].result(), value["metadata"].get("shape")
    if stored_shape is not None and tuple(stored_shape) != leaves[name].shape:
      raise ValueError(f"{checkpoint_file}: parameter {name} has shape {leaves[name].shape} on disk, "
                       f"{tuple(stored_shape)} in the msgpack spec")
  if dtype is not None:
    leaves = {k: v.astype(dtype) for k, v in leaves.items()}
  return unflatten_params(leaves)


def _chunk_shape(shape: tuple[int, ...], itemsize: int) -> list[int]:
  """Halves the largest chunk dimension until a chunk fits in t5x's 64 MiB (zarr allows ragged edge chunks)."""
  chunks = list(shape)
  while math.prod(chunks) * itemsize > _CHUNK_BYTES:
    axis = int(np.argmax(chunks))
    chunks[axis] = math.ceil(chunks[axis] / 2)
  return chunks


def _write_array(array: np.ndarray, name: str, directory: str) -> tuple[dict[str, Any], ts.Future]:
  """Starts writing `array` as gzip zarr under `directory`/`name`; returns (relative spec, write future)."""
  spec = {"driver": "zarr", "dtype": array.dtype.name, "kvstore": {"driver": "file", "path": name},
          "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape),
                       "chunks": _chunk_shape(array.shape, array.dtype.itemsize)}}
  absolute = {**spec, "kvstore": {"driver": "file", "path": os.path.join(directory, name)}}
  store = ts.open(absolute, create=True).result()
  return ts.Spec(spec).to_json(), store.write(array)


def save_t5x_checkpoint(params: dict, directory: str, step: int = 0) -> str:
  """Writes `params` as `directory`/checkpoint_<step>/ in t5x's layout, atomically (temp dir, then rename).

  Arrays keep their dtype (cast first to export bfloat16). Arrays of more than 16 elements go to
  TensorStore as gzip zarr named by their dotted path (`target.encoder.layers_0.mlp.wi.kernel`); smaller
  ones are stored inline in the msgpack file.

  Args:
    params: nested dict of arrays with t5x's names.
    directory: the model directory; created if missing.
    step: the training step, stored as state/step and in the directory name.

  Returns:
    The checkpoint_<step> directory written.

  Raises:
    FileExistsError: checkpoint_<step> already exists.
  """
  final_dir = os.path.join(directory, f"checkpoint_{step}")
  if os.path.exists(final_dir):
    raise FileExistsError(f"Not saving step {step}: {final_dir} already exists")
  tmp_dir = f"{final_dir}.tmp-{os.getpid()}-{time.time_ns()}"  # Like t5x's checkpoint_<step>.tmp-<time>.
  os.makedirs(tmp_dir)
  try:
    written, writes = {}, []
    for key, value in flatten_params(params).items():
      if "." in key:
        raise ValueError(f"parameter {key}: '.' in a name would be ambiguous in t5x's dotted array paths")
      array = np.asarray(value)
      if array.size <= _INLINE_MAX_ELEMENTS:
        written[key] = array
        continue
      written[key], write = _write_array(array, "target." + key.replace("/", "."), tmp_dir)
      writes.append(write)
    for write in writes:
      write.result()
    contents = {"version": VERSION, "optimizer": {"target": unflatten_params(written),
                                                  "state": {"step": np.asarray(step, np.int64)}}}
    with open(os.path.join(tmp_dir, CHECKPOINT_FILE), "wb") as f:
      f.write(serialization.msgpack_serialize(contents))
    os.rename(tmp_dir, final_dir)
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  return final_dir
