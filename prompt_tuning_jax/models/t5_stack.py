"""T5 encoder and decoder stacks: embedding, shared relative position bias, the layers (models/t5_layers.py),
final norm; the decoder's output head.

Shapes: b=batch, l=encoder length, t=decoder length, d=embed, n=heads.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers, rows
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.models.t5_config import T5Config
from prompt_tuning_jax.models.t5_layers import MLP_INIT, DecoderLayer, EncoderLayer, apply_layers, build_layers

Array = jax.Array


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
