"""Multi-head attention shared by T5 and BERT, with a key/value cache and PEFT slots.

Shapes: b=batch, q=query length, k=key length, n=heads, h=head_dim, d=embed.
"""
import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers, rows
from prompt_tuning_jax.models.slots import NO_SLOTS, Slots

Array = jax.Array
NEG_INF = -1e10  # NOTE: finite, so fully masked rows stay finite (they are padding and never read).


def dot_product_attention(query: Array, key: Array, value: Array, bias: Array, *, scale: float,
                          dropout_rate: float = 0.0, dropout_rng: Optional[Array] = None,
                          deterministic: bool = True) -> Array:
  """Softmax attention with an additive bias; logits and softmax in float32.

  Args:
    query: [b, q, n, h]; key, value: [b, k, n, h].
    bias: [b|1, n|1, q|1, k], already holding the mask as NEG_INF entries.
    scale: multiplies the logits (T5: 1.0, BERT: head_dim**-0.5).
  Returns:
    [b, q, n, h].
  """
  logits = jnp.einsum("bqnh,bknh->bnqk", query, key, preferred_element_type=jnp.float32)
  weights = jax.nn.softmax(logits * scale + bias.astype(jnp.float32), axis=-1)
  if not deterministic and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bnqk,bknh->bqnh", weights.astype(value.dtype), value)


def mask_to_bias(mask: Optional[Array], bias: Optional[Array]) -> Array:
  """Folds a boolean mask [b, 1|n, q, k] into an additive bias (0 where True, NEG_INF elsewhere)."""
  out = jnp.zeros((), jnp.float32) if bias is None else bias.astype(jnp.float32)
  if mask is not None:
    out = out + jnp.where(mask, 0.0, NEG_INF)
  return out


class MultiHeadAttention(nn.Module):
  """Attention with t5x parameter names query/key/value/out.

  Attributes:
    num_heads / head_dim: heads and size per head.
    where: call-site name handed to slot factories, e.g. 'encoder/attention'.
    logit_scale: None means head_dim**-0.5 (BERT); T5 uses 1.0 and folds the scale into the init.
    use_bias: BERT projections carry biases.
    dropout_rate: on the attention weights.
    kernel_init: projection init; `query_kernel_init` overrides the query's (T5 folds 1/sqrt(h) here).
    attention_fn: the kernel computing softmax(q k^T) v from q, k, v and an additive bias.
    slots: PEFT slots (attention_kv_prefix, projection_delta, attention_head_adapter).
  """
  num_heads: int
  head_dim: int
  where: str
  logit_scale: Optional[float] = None
  use_bias: bool = False
  dropout_rate: float = 0.0
  kernel_init: layers.Initializer = layers.default_kernel_init
  query_kernel_init: Optional[layers.Initializer] = None
  attention_fn: Callable[..., Array] = dot_product_attention
  slots: Slots = NO_SLOTS
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _project(self, name: str, x: Array, features: int, axes: tuple[str, str], init) -> Array:
    """x [..., in] (or rows.RowBlocks, projected per block) -> [..., features] through `name`, plus a
    projection_delta slot (LoRA) if bound."""
    dense = layers.Dense(features, axes, self.use_bias, init, self.dtype, self.param_dtype, name=name)
    delta = self.slots.make("projection_delta", where=self.where, target=name,
                            in_features=x.shape[-1], out_features=features)
    return rows.join_rows(rows.rowwise(layers.with_delta(dense, delta), x))

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, mask: Optional[Array] = None,
               bias: Optional[Array] = None, *, deterministic: bool = True, decode: bool = False) -> Array:
    """Attends from inputs_q [b, q, d] to inputs_kv [b, k, d] (either may be rows.RowBlocks).

    Args:
      mask: boolean [b, 1|n, q, k], True where attention is allowed.
      bias: additive [b|1, n, q, k] (T5 relative positions).
      decode: use and update the 'cache' collection (one query step at a time).
    Returns:
      [b, q, d].
    """
    b, embed = inputs_q.shape[0], inputs_q.shape[-1]
    inner = self.num_heads * self.head_dim
    split = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, self.head_dim))
    q_init = self.query_kernel_init or self.kernel_init
    query = split(self._project("query", inputs_q, inner, ("embed", "joined_kv"), q_init))
    key = split(self._project("key", inputs_kv, inner, ("embed", "joined_kv"), self.kernel_init))
    value = split(self._project("value", inputs_kv, inner, ("embed", "joined_kv"), self.kernel_init))
    if decode:
      key, value = self._update_cache(key, value)
    bias = mask_to_bias(mask, bias)  # broadcastable to [b, n, q, k]

    prefix = self.slots.make("attention_kv_prefix", where=self.where, num_heads=self.num_heads,
                             head_dim=self.head_dim)
    prefix_kv, additive_prefix = None, None
    if prefix is not None:
      pk, pv, gated = prefix(b)
      prefix_kv, additive_prefix = ((pk, pv), None) if gated else (None, (pk, pv))
    if prefix_kv is not None:
      # Gated form: prefix columns join the keys with zero bias and always-visible mask.
      pk, pv = prefix_kv  # [b, p, n, h]
      bias = jnp.broadcast_to(bias, (b, self.num_heads, query.shape[1], key.shape[1]))
      bias = jnp.concatenate([jnp.zeros(bias.shape[:-1] + (pk.shape[1],), bias.dtype), bias], axis=-1)
      key = jnp.concatenate([pk.astype(key.dtype), key], axis=1)  # [b, k, n, h] -> [b, p+k, n, h]
      value = jnp.concatenate([pv.astype(value.dtype), value], axis=1)

    dropout_rng = None if deterministic or self.dropout_rate == 0.0 else self.make_rng("dropout")
    scale = self.head_dim ** -0.5 if self.logit_scale is None else self.logit_scale
    attend = functools.partial(self.attention_fn, scale=scale, dropout_rate=self.dropout_rate,
                               dropout_rng=dropout_rng, deterministic=deterministic)
    heads = attend(query, key, value, bias)  # [b, q, n, h]
    if additive_prefix is not None:
      # Plain-addition ablation (He et al. 2022): h + softmax(q P_k^T) P_v, no gate.
      pk, pv = additive_prefix
      heads = heads + attend(query, pk.astype(key.dtype), pv.astype(value.dtype), jnp.zeros((), jnp.float32))
    heads = heads.reshape(heads.shape[:-2] + (inner,))  # [b, q, n, h] -> [b, q, n*h]
    head_adapter = self.slots.make("attention_head_adapter", where=self.where, embed_dim=embed,
                                   num_heads=self.num_heads, head_dim=self.head_dim)
    if head_adapter is not None:
      heads = heads + head_adapter(rows.join_rows(inputs_q), deterministic=deterministic).astype(heads.dtype)
    return self._project("out", heads, embed, ("joined_kv", "embed"), self.kernel_init)

  def _update_cache(self, key: Array, value: Array) -> tuple[Array, Array]:
    """Writes this step's key/value [b, 1, n, h] at cache_index; returns the full cache [b, L, n, h].

    The first call (during `init` with full-length inputs) only allocates the cache.
    """
    initialized = self.has_variable("cache", "cached_key")
    cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
    cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not initialized:
      return key, value
    index = cache_index.value
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, index, 0, 0))
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, index, 0, 0))
    cache_index.value = index + key.shape[1]
    return cached_key.value, cached_value.value
