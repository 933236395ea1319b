"""T5 encoder and decoder stacks (pre-LN RMSNorm layers, shared relative position bias).

Shapes: b=batch, l=encoder length, t=decoder length, d=embed, n=heads.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers, rows
from prompt_tuning_jax.models.attention import MultiHeadAttention
from prompt_tuning_jax.models.mlp import MlpBlock
from prompt_tuning_jax.models.slots import ADAPTERS_AFTER_DROPOUT, Slots
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
    adapter = self.slots.make(slot, where=where, embed_dim=x.shape[-1])
    dropout = nn.Dropout(self.config.dropout_rate)
    after_dropout = slot in ADAPTERS_AFTER_DROPOUT
    if after_dropout:
      out = dropout(out, deterministic=deterministic)
    if adapter is not None:
      out = adapter(sublayer_input, out, deterministic=deterministic).astype(out.dtype)
    return x + (out if after_dropout else dropout(out, deterministic=deterministic))

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


class Encoder(nn.Module):
  """Token embedding (shared) -> input_transform -> dropout -> layers -> encoder_norm -> dropout."""
  config: T5Config
  token_embedder: nn.Module
  slots: Slots

  def setup(self):
    cfg = self.config
    self.input_transform = self.slots.make("input_transform", where="encoder", embed_dim=cfg.embed_dim)
    self.layer_input_hook = self.slots.make("layer_input_hook", where="encoder",
                                            num_layers=cfg.num_encoder_layers, embed_dim=cfg.embed_dim)
    self.relpos_bias = layers.RelativePositionBiases(
        cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance, cfg.num_heads,
        bidirectional=True, dtype=cfg.activation_dtype, param_dtype=cfg.parameter_dtype)
    self.encoder_norm = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, cfg.parameter_dtype)
    self.dropout = nn.Dropout(cfg.dropout_rate)
    self.layers = build_layers(EncoderLayer, cfg, self.slots, cfg.num_encoder_layers, 3, (4,))

  def embed(self, tokens: Array) -> Array:
    """[b, l] ids -> [b, l, d]."""
    return self.token_embedder(tokens)

  def combine_inputs(self, embedded: Array, mask: Array, tokens: Array, *,
                     prompt_index: Optional[Array] = None, deterministic: bool = True):
    """The input_transform slot (prompts): ([b, l, d], [b, l]) -> ([b, l', d], [b, l'])."""
    if self.input_transform is None:
      return embedded, mask
    return self.input_transform(embedded, mask, tokens, prompt_index=prompt_index, deterministic=deterministic)

  def encode_from_embeddings(self, embedded: Array, mask: Array, tokens: Array, *,
                             deterministic: bool = True) -> Array:
    """[b, l, d] embedded inputs (or rows.RowBlocks of them) and [b, l] bool mask -> encoded [b, l, d]."""
    x = rows.rowwise(lambda block: self.dropout(block, deterministic=deterministic), embedded)
    positions = jnp.arange(x.shape[1])
    bias = self.relpos_bias(positions, positions)  # [1, n, l, l]
    attention_mask = mask[:, None, None, :]  # key padding only, as in HF T5
    x = apply_layers(self, self.layers, x, (attention_mask, bias, deterministic), self.layer_input_hook,
                     {"tokens": tokens, "mask": mask}, deterministic)
    return self.dropout(self.encoder_norm(x), deterministic=deterministic)

  def __call__(self, tokens: Array, *, prompt_index: Optional[Array] = None,
               deterministic: bool = True) -> tuple[Array, Array]:
    """[b, l] ids -> (encoded [b, l', d], mask [b, l'])."""
    embedded, mask = self.combine_inputs(self.embed(tokens), tokens > 0, tokens, prompt_index=prompt_index,
                                         deterministic=deterministic)
    return self.encode_from_embeddings(embedded, mask, tokens, deterministic=deterministic), mask


class Decoder(nn.Module):
  """Causal decoder with cross-attention and the output head (tied or `logits_dense`)."""
  config: T5Config
  token_embedder: nn.Module
  slots: Slots

  def setup(self):
    cfg = self.config
    self.relpos_bias = layers.RelativePositionBiases(
        cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance, cfg.num_heads,
        bidirectional=False, dtype=cfg.activation_dtype, param_dtype=cfg.parameter_dtype)
    self.decoder_norm = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, cfg.parameter_dtype)
    self.dropout = nn.Dropout(cfg.dropout_rate)
    self.layers = build_layers(DecoderLayer, cfg, self.slots, cfg.num_decoder_layers, 6, (6, 7))
    if not cfg.logits_via_embedding:
      self.logits_dense = layers.Dense(cfg.vocab_size, ("embed", "vocab"), kernel_init=MLP_INIT,
                                       dtype=cfg.activation_dtype, param_dtype=cfg.parameter_dtype)

  def __call__(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array, *,
               decoder_positions: Optional[Array] = None, max_decode_length: Optional[int] = None,
               deterministic: bool = True, decode: bool = False) -> Array:
    """encoded [b, l, d], encoder_mask [b, l], tokens [b, t] -> logits [b, t, vocab] float32.

    With decode=True the layers read and extend the KV cache: t == 1, `decoder_positions` [b, 1] is the
    step, and keys span the cache (`max_decode_length`).
    """
    cfg = self.config
    y = self.dropout(self.token_embedder(decoder_input_tokens), deterministic=deterministic)
    t = y.shape[1]
    query_positions = jnp.arange(t)[None] if decoder_positions is None else decoder_positions  # [b|1, t]
    key_positions = jnp.arange(t if max_decode_length is None or not decode else max_decode_length)
    self_bias = self.relpos_bias(query_positions, key_positions)  # [b|1, n, t, T]
    self_mask = (key_positions[None, None, :] <= query_positions[:, :, None])[:, None]  # [b|1, 1, t, T]
    cross_mask = encoder_mask[:, None, None, :]
    y = apply_layers(self, self.layers, y, (encoded, self_mask, self_bias, cross_mask, deterministic, decode),
                     None, {}, deterministic)
    y = self.dropout(self.decoder_norm(y), deterministic=deterministic)
    if cfg.logits_via_embedding:
      logits = self.token_embedder.attend(y) * cfg.embed_dim ** -0.5  # NOTE: tied head rescale (T5 1.0).
    else:
      logits = self.logits_dense(y)
    return logits.astype(jnp.float32)
