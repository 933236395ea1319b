"""T5's encoder and decoder layers (pre-LN RMSNorm sublayers) and the scan over them (models/t5_stack.py).

Shapes: b=batch, l=encoder length, t=decoder length, T=keys (the KV cache's length when decoding), d=embed,
n=heads.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers, rows
from prompt_tuning_jax.models.attention import MultiHeadAttention
from prompt_tuning_jax.models.mlp import MlpBlock
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.models.t5_config import T5Config

Array = jax.Array

# t5x's initialisers. NOTE: T5 has no 1/sqrt(head_dim) logit scaling; it is folded into the query init.
ATTENTION_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
MLP_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def query_init(head_dim: int) -> layers.Initializer:
  def init(key, shape, dtype=jnp.float32):
    return ATTENTION_INIT(key, shape, dtype) / jnp.sqrt(head_dim).astype(dtype)
  return init


class _Sublayers:
  """Builders shared by the encoder and decoder layers (fields `config` and `slots`)."""

  def norm(self, name: str) -> nn.Module:
    cfg = self.config
    return layers.RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, cfg.parameter_dtype, name=name)

  def attention(self, name: str, where: str) -> MultiHeadAttention:
    cfg = self.config
    return MultiHeadAttention(cfg.num_heads, cfg.head_dim, where, logit_scale=1.0, use_bias=False,
                              dropout_rate=cfg.dropout_rate, kernel_init=ATTENTION_INIT,
                              query_kernel_init=query_init(cfg.head_dim), slots=self.slots,
                              dtype=cfg.activation_dtype, param_dtype=cfg.parameter_dtype, name=name)

  def residual(self, x: Array, sublayer_input: Array, out: Array, where: str, slot: str,
               deterministic: bool) -> Array:
    """The post-sublayer adapter slot, dropout and residual add (METHODS.md §D(2)): attention adapters before
    the dropout, x + Drop(A(sublayer_input, out)); the FFN adapter after it, x + A(sublayer_input, Drop(out))."""
    return x + layers.adapted_dropout(self.slots, slot, where, self.config.dropout_rate, sublayer_input, out,
                                      deterministic)

  def mlp(self, x: Array, where: str, deterministic: bool) -> Array:
    cfg = self.config
    h = self.norm("pre_mlp_layer_norm")(x)
    out = MlpBlock(cfg.mlp_dim, cfg.mlp_activations, where, use_bias=False,
                   intermediate_dropout_rate=cfg.dropout_rate, kernel_init=MLP_INIT, slots=self.slots,
                   dtype=cfg.activation_dtype, param_dtype=cfg.parameter_dtype, name="mlp")(
                       h, deterministic=deterministic)
    return self.residual(x, h, out, where, "post_mlp_adapter", deterministic)


class EncoderLayer(nn.Module, _Sublayers):
  """x -> x + Attn(RMS(x)) -> x + FFN(RMS(x)); returns (x, None) so it can be scanned."""
  config: T5Config
  slots: Slots

  @nn.compact
  def __call__(self, x: Array, mask: Array, bias: Array, deterministic: bool) -> tuple[Array, None]:
    """x [b, l, d] (or rows.RowBlocks of it), mask [b, 1, 1, l], bias [1, n, l, l] -> ([b, l, d], None)."""
    h = rows.rowwise(self.norm("pre_attention_layer_norm"), x)
    out = self.attention("attention", "encoder/attention")(h, h, mask, bias, deterministic=deterministic)
    x, h = rows.join_rows(x), rows.join_rows(h)
    x = self.residual(x, h, out, "encoder/attention", "post_attention_adapter", deterministic)
    return self.mlp(x, "encoder/mlp", deterministic), None


class DecoderLayer(nn.Module, _Sublayers):
  """Self-attention, cross-attention and FFN sublayers; returns (y, None) so it can be scanned."""
  config: T5Config
  slots: Slots

  @nn.compact
  def __call__(self, y: Array, encoded: Array, self_mask: Array, self_bias: Array, cross_mask: Array,
               deterministic: bool, decode: bool) -> tuple[Array, None]:
    """y [b, t, d], encoded [b, l, d], self_mask [b, 1, t, T], self_bias [b, n, t, T], cross_mask [b, 1, 1, l]."""
    h = self.norm("pre_self_attention_layer_norm")(y)
    out = self.attention("self_attention", "decoder/self_attention")(
        h, h, self_mask, self_bias, deterministic=deterministic, decode=decode)
    y = self.residual(y, h, out, "decoder/self_attention", "post_attention_adapter", deterministic)
    h = self.norm("pre_cross_attention_layer_norm")(y)
    out = self.attention("encoder_decoder_attention", "decoder/encoder_decoder_attention")(
        h, encoded, cross_mask, None, deterministic=deterministic)
    y = self.residual(y, h, out, "decoder/encoder_decoder_attention", "post_attention_adapter", deterministic)
    return self.mlp(y, "decoder/mlp", deterministic), None


def build_layers(layer_cls: type, config: T5Config, slots: Slots, num_layers: int,
                 num_args: int, static_argnums: tuple[int, ...]):
  """Layers `layers_0..` (a list) or, with config.scan_layers, one scanned (and remat) module `layers`.

  `num_args` counts the layer's call arguments after `x`; `static_argnums` the Python-bool ones
  (counted with `self` at 0), which remat must treat as static.
  """
  if not config.scan_layers:
    return [layer_cls(config, slots, name=f"layers_{i}") for i in range(num_layers)]
  block = layer_cls
  if config.remat_policy != "none":
    block = nn.remat(layer_cls, prevent_cse=False, static_argnums=static_argnums,
                     policy=getattr(jax.checkpoint_policies, config.remat_policy))
  scanned = nn.scan(block, variable_axes={"params": 0, "cache": 0}, split_rngs={"params": True, "dropout": True},
                    in_axes=(nn.broadcast,) * num_args, length=num_layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
  return scanned(config, slots, name="layers")


def apply_layers(stack: nn.Module, layer_modules, x: Array, args: tuple, hook: Optional[nn.Module],
                 context: dict, deterministic: bool) -> Array:
  """Runs x through the layers; the layer_input_hook slot (if bound) runs before each layer."""
  if isinstance(layer_modules, nn.Module):
    if hook is not None:
      raise ValueError(f"{stack.name}: the layer_input_hook slot needs per-layer calls; set scan_layers=False")
    return layer_modules(rows.join_rows(x), *args)[0]
  state = None
  for i, layer in enumerate(layer_modules):
    if hook is not None:
      x, state = hook(rows.join_rows(x), layer=i, state=state, context=context, deterministic=deterministic)
    x, _ = layer(x, *args)
  return x
