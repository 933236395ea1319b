"""Encoder-decoder T5 (1.0, 1.1 / LM-adapted, mT5) in Flax linen with t5x parameter names.

Calling convention (t5x): token ids with 0 = padding; the decoder input starts with 0 (BOS = pad).
  logits = model.apply({'params': params}, encoder_input_tokens, decoder_input_tokens, enable_dropout=False)

Seams (DESIGN.md): `embed` -> `combine_inputs` (input_transform slot: prompts) -> `encode_from_embeddings`;
every other PEFT slot is handed down to the layers (see models/slots.py).
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers
from prompt_tuning_jax.models.slots import NO_SLOTS, Slots
from prompt_tuning_jax.models.t5_config import T5Config
from prompt_tuning_jax.models.t5_stack import Decoder, Encoder

Array = jax.Array


class T5(nn.Module):
  """The T5 encoder-decoder.

  Attributes:
    config: sizes and variant (models/t5_config.py).
    slots: PEFT slots; all None gives the base model exactly.
  """
  config: T5Config
  slots: Slots = NO_SLOTS

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.embed_dim, dtype=cfg.activation_dtype,
                                       param_dtype=cfg.parameter_dtype, name="token_embedder")
    slots = self.slots.for_backbone("t5")
    self.encoder = Encoder(cfg, self.token_embedder, slots, name="encoder")
    self.decoder = Decoder(cfg, self.token_embedder, slots, name="decoder")

  def encode(self, encoder_input_tokens: Array, *, prompt_index: Optional[Array] = None,
             enable_dropout: bool = False) -> tuple[Array, Array]:
    """Tokens [b, l] -> (encoded [b, l', d], encoder_mask [b, l'] bool); l' > l when prompts are added.

    `prompt_index` [b] picks each example's prompt from a prompt bank (ensembles, mixed-task batches).
    """
    return self.encoder(encoder_input_tokens, prompt_index=prompt_index, deterministic=not enable_dropout)

  def decode(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array, *,
             decoder_positions: Optional[Array] = None, max_decode_length: Optional[int] = None,
             enable_dropout: bool = False, decode: bool = False) -> Array:
    """Decoder pass -> logits [b, t, vocab].

    With decode=True: one step at `decoder_positions` [b, 1] against a KV cache of `max_decode_length`.
    """
    return self.decoder(encoded, encoder_mask, decoder_input_tokens, decoder_positions=decoder_positions,
                        max_decode_length=max_decode_length, deterministic=not enable_dropout, decode=decode)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array, *,
               prompt_index: Optional[Array] = None, enable_dropout: bool = False) -> Array:
    """[b, l] and [b, t] token ids -> logits [b, t, vocab] (float32)."""
    encoded, encoder_mask = self.encode(encoder_input_tokens, prompt_index=prompt_index,
                                        enable_dropout=enable_dropout)
    return self.decode(encoded, encoder_mask, decoder_input_tokens, enable_dropout=enable_dropout)


def shift_right(targets: Array, decoder_start_token_id: int = 0) -> Array:
  """Teacher-forcing decoder inputs: [b, t] targets -> [start, t_0, ..., t_{T-2}]."""
  start = jnp.full(targets.shape[:-1] + (1,), decoder_start_token_id, targets.dtype)
  return jnp.concatenate([start, targets[..., :-1]], axis=-1)


__all__ = ["T5", "T5Config", "shift_right"]


def scan_params(params: dict) -> dict:
  """Unscanned tree (`layers_0`, `layers_1`, ...) -> scanned tree (`layers`, leading axis = layer).

  Use it to run checkpoints (HF, t5x) in a `scan_layers=True` model; `unscan_params` inverts it.
  """
  out = dict(params)
  for stack in ("encoder", "decoder"):
    sub = dict(params[stack])
    names = sorted((k for k in sub if k.startswith("layers_")), key=lambda k: int(k.split("_")[1]))
    if names:
      stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[sub.pop(k) for k in names])
      out[stack] = {**sub, "layers": stacked}
  return out


def unscan_params(params: dict) -> dict:
  """Scanned tree (`layers` with a leading layer axis) -> unscanned (`layers_0`, ...)."""
  out = dict(params)
  for stack in ("encoder", "decoder"):
    sub = dict(params[stack])
    if "layers" in sub:
      stacked = sub.pop("layers")
      num_layers = jax.tree_util.tree_leaves(stacked)[0].shape[0]
      for i in range(num_layers):
        sub[f"layers_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
      out[stack] = sub
  return out
