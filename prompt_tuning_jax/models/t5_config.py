"""T5 configuration and size presets (T5 1.0, T5 1.1 / LM-adapted, mT5)."""
import dataclasses
from typing import Any

import jax.numpy as jnp

T5_VOCAB_SIZE = 32128
MT5_VOCAB_SIZE = 250112


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Sizes and variant of a T5 model.

  Attributes:
    vocab_size: rows of the shared token embedding.
    embed_dim: d_model.
    num_heads / head_dim: attention heads and size per head (inner size num_heads * head_dim).
    mlp_dim: FFN hidden units (d_ff).
    num_encoder_layers / num_decoder_layers: depth of each stack.
    mlp_activations: ('relu',) for T5 1.0; ('gelu_tanh', 'linear') (gated-GELU) for T5 1.1 / mT5.
    logits_via_embedding: tied head with the d_model**-0.5 rescale (T5 1.0); else a `logits_dense` head.
    dropout_rate: every dropout of the model (t5x finetune uses 0.1).
    relative_attention_num_buckets / relative_attention_max_distance: relative position bucketing.
    layer_norm_epsilon: RMSNorm epsilon.
    dtype: activation dtype ('float32' or 'bfloat16'); params are `param_dtype`.
    scan_layers: scan each stack over its layers (params gain a leading 'layers' axis) with remat.
    remat_policy: a `jax.checkpoint_policies` name used when scanning ('none' disables remat).
  """
  vocab_size: int = T5_VOCAB_SIZE
  embed_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  mlp_activations: tuple[str, ...] = ("gelu_tanh", "linear")
  logits_via_embedding: bool = False
  dropout_rate: float = 0.0
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat_policy: str = "nothing_saveable"

  @property
  def activation_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  @property
  def parameter_dtype(self) -> Any:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes) -> "T5Config":
    return dataclasses.replace(self, **changes)


def _t5_1_0(embed_dim, num_heads, head_dim, mlp_dim, num_layers) -> T5Config:
  return T5Config(embed_dim=embed_dim, num_heads=num_heads, head_dim=head_dim, mlp_dim=mlp_dim,
                  num_encoder_layers=num_layers, num_decoder_layers=num_layers,
                  mlp_activations=("relu",), logits_via_embedding=True)


def _t5_1_1(embed_dim, num_heads, head_dim, mlp_dim, num_layers, vocab_size=T5_VOCAB_SIZE) -> T5Config:
  return T5Config(vocab_size=vocab_size, embed_dim=embed_dim, num_heads=num_heads, head_dim=head_dim,
                  mlp_dim=mlp_dim, num_encoder_layers=num_layers, num_decoder_layers=num_layers,
                  mlp_activations=("gelu_tanh", "linear"), logits_via_embedding=False)


# The sizes of the released checkpoints (T5 paper Table 14; t5x/examples/t5/t5_1_1/*.gin; mT5 paper).
PRESETS: dict[str, T5Config] = {
    "t5_1_0_small": _t5_1_0(512, 8, 64, 2048, 6),
    "t5_1_0_base": _t5_1_0(768, 12, 64, 3072, 12),
    "t5_1_0_large": _t5_1_0(1024, 16, 64, 4096, 24),
    "t5_1_0_xl": _t5_1_0(1024, 32, 128, 16384, 24),
    "t5_1_0_xxl": _t5_1_0(1024, 128, 128, 65536, 24),
    "t5_1_1_small": _t5_1_1(512, 6, 64, 1024, 8),
    "t5_1_1_base": _t5_1_1(768, 12, 64, 2048, 12),
    "t5_1_1_large": _t5_1_1(1024, 16, 64, 2816, 24),
    "t5_1_1_xl": _t5_1_1(2048, 32, 64, 5120, 24),
    "t5_1_1_xxl": _t5_1_1(4096, 64, 64, 10240, 24),
    "mt5_small": _t5_1_1(512, 6, 64, 1024, 8, MT5_VOCAB_SIZE),
    "mt5_base": _t5_1_1(768, 12, 64, 2048, 12, MT5_VOCAB_SIZE),
    "mt5_large": _t5_1_1(1024, 16, 64, 2816, 24, MT5_VOCAB_SIZE),
    "mt5_xl": _t5_1_1(2048, 32, 64, 5120, 24, MT5_VOCAB_SIZE),
    "mt5_xxl": _t5_1_1(4096, 64, 64, 10240, 24, MT5_VOCAB_SIZE),
}


def preset(name: str, **overrides) -> T5Config:
  """A named size preset (e.g. 't5_1_1_base'), with field overrides."""
  if name not in PRESETS:
    raise ValueError(f"unknown T5 preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides)
