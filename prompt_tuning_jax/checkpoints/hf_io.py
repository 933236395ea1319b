"""Generic Hugging Face directory IO shared by the T5 and BERT mappings (hf_t5.py, hf_bert.py).

A mapping is `names: {our '/'-joined path: (hf_name, transpose)}`. Loading checks the tensors found
against the model's abstract shapes and raises one ValueError naming the parameter, the HF name and
both shapes. Only safetensors and JSON are read: nothing here can execute pickled code.
"""
import json
import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params

SAFETENSORS = "model.safetensors"


def read_hf_dir(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """A HF model directory -> (config.json dict, {name: array}) from model.safetensors or its shards.

  Sharded checkpoints (large T5s) list their files in model.safetensors.index.json.
  """
  config_path = os.path.join(path, "config.json")
  weights_path, index_path = os.path.join(path, SAFETENSORS), os.path.join(path, SAFETENSORS + ".index.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{config_path}: not found (expected a HF directory with config.json and {SAFETENSORS})")
  with open(config_path) as f:
    config = json.load(f)
  if os.path.isfile(weights_path):
    return config, load_file(weights_path)
  if not os.path.isfile(index_path):
    raise FileNotFoundError(f"{path}: neither {SAFETENSORS} nor {SAFETENSORS}.index.json found")
  with open(index_path) as f:
    shards = sorted(set(json.load(f)["weight_map"].values()))
  tensors = {}
  for shard in shards:
    tensors.update(load_file(os.path.join(path, shard)))
  return config, tensors


def write_hf_dir(path: str, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
  """Writes config.json + model.safetensors (each through a temporary file and an atomic rename)."""
  os.makedirs(path, exist_ok=True)
  tmp = os.path.join(path, f".{SAFETENSORS}.tmp")
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata={"format": "pt"})
  os.replace(tmp, os.path.join(path, SAFETENSORS))
  tmp = os.path.join(path, ".config.json.tmp")
  with open(tmp, "w") as f:
    json.dump(config, f, indent=2)
  os.replace(tmp, os.path.join(path, "config.json"))


def abstract_params(model: nn.Module, *example_inputs, **kwargs) -> dict[str, tuple[int, ...]]:
  """{path: shape} of `model`'s params, from jax.eval_shape (nothing is allocated)."""
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs, **kwargs))
  return {k: tuple(v.shape) for k, v in flatten_params(nn.meta.unbox(variables["params"])).items()}


def params_from_tensors(expected: dict[str, tuple[int, ...]], names: dict[str, tuple[str, bool]],
                        tensors: dict[str, np.ndarray], source: str, dtype=np.float32) -> dict:
  """HF tensors -> our nested params; every expected path must be found with its shape, nothing left over."""
  unmapped = sorted(set(expected) - set(names))
  if unmapped:
    raise ValueError(f"{source}: no HF name for parameter {unmapped[0]} (mapping incomplete)")
  flat, used = {}, set()
  for path, shape in expected.items():
    hf_name, transpose = names[path]
    stored_shape = shape[::-1] if transpose else shape  # torch Linear weights are [out, in]
    if hf_name not in tensors:
      raise ValueError(f"{source}: missing {hf_name} for parameter {path} (expected shape {stored_shape})")
    value = np.asarray(tensors[hf_name], dtype=dtype)
    if value.shape != stored_shape:
      raise ValueError(f"{source}: {hf_name} -> {path}: shape {value.shape} in the file, "
                       f"{stored_shape} expected by the model")
    flat[path] = value.T if transpose else value
    used.add(hf_name)
  unexpected = sorted(set(tensors) - used)
  if unexpected:
    raise ValueError(f"{source}: unexpected tensor {unexpected[0]} {tuple(tensors[unexpected[0]].shape)} "
                     f"matches no model parameter ({len(unexpected)} unexpected in all)")
  return unflatten_params(flat)


def tensors_from_params(params: dict, names: dict[str, tuple[str, bool]]) -> dict[str, np.ndarray]:
  """Our nested params -> {hf_name: float32 array} (transposed back where the mapping says so)."""
  out = {}
  for path, value in flatten_params(params).items():
    if path not in names:
      raise ValueError(f"parameter {path} has no HF name (mapping incomplete)")
    hf_name, transpose = names[path]
    value = np.asarray(value, dtype=np.float32)
    out[hf_name] = value.T if transpose else value
  return out
