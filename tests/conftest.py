"""Shared pytest fixtures, and one XLA compilation cache for the whole run.

`parameter_report` is `params.parameter_report` memoised for the session: several test files count the same
(model file, method file, bindings) on the base models, and a report is a pure function of them (gin is
cleared and parsed from the files each time), so each one is traced once and every caller gets its own copy.

The suite compiles the same tiny programs in many processes (the train CLI in subprocesses, notebooks, the
results scripts), so JAX's persistent compilation cache points at one temporary folder that every test
process inherits (set before jax is imported; removed at exit); pytest-xdist's workers inherit it from the
controller, which imports this file first, so they share it too. Programs and numerics are unchanged: a cache
hit returns the executable the same compile would produce. A JAX_COMPILATION_CACHE_DIR set from outside is
used and kept: `make test-fast` passes one that outlives the run. Measured on the 2-core machine at load 8-10
(user+sys CPU of the fast tier, 432 tests): no cache 331 s, this per-run cache 371 s (the keys and writes cost
more than the few repeats save), a kept cache on its next run 209 s; the whole suite gains from the per-run
cache through its subprocesses (1511 -> 1354 s when it was added).
"""
import atexit
import copy
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="ptj_test_xla_cache_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import flax.linen as nn  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

from prompt_tuning_jax import params  # pylint: disable=wrong-import-position
from prompt_tuning_jax.models.slots import Slots  # pylint: disable=wrong-import-position
from tasks import vocabularies  # pylint: disable=wrong-import-position

IDENTITY_SLOTS = ("input_transform", "layer_input_hook", "projection_delta", "attention_head_adapter", "mlp_extra",
                  "post_attention_adapter", "post_mlp_adapter")
"""Every slot but attention_kv_prefix (a prefix adds key columns; tests/peft/test_prefix.py covers it)."""


@pytest.fixture(scope="session")
def minilm_dir() -> str:
  """HF directory (config.json, model.safetensors, vocab.txt) of the real all-MiniLM-L6-v2 weights."""
  try:
    return vocabularies.minilm_dir()
  except FileNotFoundError as error:
    pytest.fail(str(error))


@pytest.fixture(scope="session")
def parameter_report():
  """`params.parameter_report(gin_files, gin_bindings)`, each distinct call computed once per session. NOTE: a
  repeated call does not parse gin again, so a test must not rely on the gin state such a call leaves."""
  reports = {}

  def report(gin_files, gin_bindings=()):
    key = (tuple(gin_files), tuple(gin_bindings))
    if key not in reports:
      reports[key] = params.parameter_report(list(gin_files), list(gin_bindings))
    return copy.deepcopy(reports[key])
  return report


class _Identity(nn.Module):
  """Stands in for a slot module and changes nothing (additive slots return exact zeros)."""
  kind: str
  features: int = 0

  def __call__(self, *args, **kwargs):
    if self.kind == "input_transform":
      return args[0], args[1]
    if self.kind == "layer_input_hook":
      return args[0], kwargs["state"]
    if self.kind.startswith("post_"):
      return args[1]  # (sublayer_input, sublayer_output) -> output
    return jnp.zeros(args[0].shape[:-1] + (self.features,), args[0].dtype)


@pytest.fixture
def identity_slots():
  """(Slots with an identity module in every IDENTITY_SLOTS slot, the list of (slot, where, backbone, target)
  calls the model made to build them)."""
  calls = []

  def factory(kind):
    def make(*, where, backbone, **dims):
      calls.append((kind, where, backbone, dims.get("target")))
      if kind == "projection_delta":
        return _Identity(kind, dims["out_features"])
      if kind == "attention_head_adapter":
        return _Identity(kind, dims["num_heads"] * dims["head_dim"])
      return _Identity(kind, dims.get("embed_dim", 0))
    return make

  return Slots(**{k: factory(k) for k in IDENTITY_SLOTS}), calls
