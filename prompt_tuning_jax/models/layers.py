"""Shared building blocks with logical axis names: Dense, Embed, norms, relative position bias.

Every parameter is created through `param_with_axes`, so `nn.get_partition_spec` on the abstract
init tree yields the logical names that `train/partitioning.py` maps onto the (data, model) mesh.
Kernels are stored 2-D (`[in, out]`), as t5x stores them, so t5x checkpoints load without reshaping.
"""
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax.models.slots import ADAPTERS_AFTER_DROPOUT, Slots

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def param_with_axes(module: nn.Module, name: str, init: Initializer, shape: Sequence[int],
                    axes: Sequence[str], dtype: Dtype = jnp.float32) -> Array:
  """Creates `module.<name>` with logical axis names `axes` (one per dimension)."""
  if len(axes) != len(shape):
    raise ValueError(f"{module.path}/{name}: {len(axes)} axis names {tuple(axes)} for shape {tuple(shape)}")
  return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype)


class Dense(nn.Module):
  """A dense layer `y = x @ kernel (+ bias)` over the last axis.

  Attributes:
    features: output size.
    kernel_axes: logical names of the `[in, out]` kernel.
    use_bias: T5 has none, BERT has them (bias axis = kernel_axes[1]).
    kernel_init: initializer of the kernel.
    dtype: activation dtype; params stay `param_dtype` and are cast at use.
  A trained delta on a frozen projection (the projection_delta slot: LoRA) is added by `with_delta`.
  """
  features: int
  kernel_axes: tuple[str, str]
  use_bias: bool = False
  kernel_init: Initializer = default_kernel_init
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., in] -> [..., features]."""
    kernel = param_with_axes(self, "kernel", self.kernel_init, (x.shape[-1], self.features),
                             self.kernel_axes, self.param_dtype)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = param_with_axes(self, "bias", nn.initializers.zeros, (self.features,),
                             self.kernel_axes[1:], self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def with_delta(dense: Dense, delta: Optional[Callable[[Array], Array]]) -> Callable[[Array], Array]:
  """x -> dense(x) + delta(x) in the dense's dtype: the one place a frozen projection meets its projection_delta
  slot (LoRA; attention.py and mlp.py); `delta` None = the frozen projection alone."""
  if delta is None:
    return dense
  return lambda x: dense(x) + delta(x).astype(dense.dtype)


class Embed(nn.Module):
  """Token embedding table `[num_embeddings, features]`, also usable as a tied output layer."""
  num_embeddings: int
  features: int
  axes: tuple[str, str] = ("vocab", "embed")
  embedding_init: Initializer = nn.initializers.normal(stddev=1.0)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.embedding = param_with_axes(self, "embedding", self.embedding_init,
                                     (self.num_embeddings, self.features), self.axes, self.param_dtype)

  def __call__(self, ids: Array) -> Array:
    """[...] int ids -> [..., features]."""
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, x: Array) -> Array:
    """[..., features] -> [..., num_embeddings] logits against the table."""
    return jnp.dot(x.astype(self.dtype), self.embedding.T.astype(self.dtype))


class RMSNorm(nn.Module):
  """T5's layer norm: no mean subtraction, no bias; computed in float32.

  NOTE: x * rsqrt(mean(x**2) + eps) * scale, the variance taken in float32 as in t5x and HF.
  """
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., embed] -> [..., embed]."""
    scale = param_with_axes(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
    return (y * scale.astype(jnp.float32)).astype(self.dtype)


class LayerNorm(nn.Module):
  """BERT's layer norm with scale and bias, statistics in float32."""
  epsilon: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., embed] -> [..., embed]."""
    features = x.shape[-1]
    scale = param_with_axes(self, "scale", nn.initializers.ones, (features,), ("embed",), self.param_dtype)
    bias = param_with_axes(self, "bias", nn.initializers.zeros, (features,), ("embed",), self.param_dtype)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    return (y * scale + bias).astype(self.dtype)


def relative_position_bucket(relative_position: Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
  """T5's log-spaced bucketing of `key_pos - query_pos` into `num_buckets` ids."""
  ret = 0
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    ret += (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  n_safe = jnp.maximum(n, 1).astype(jnp.float32)
  val_if_large = max_exact + (jnp.log(n_safe / max_exact) / np.log(max_distance / max_exact)
                              * (num_buckets - max_exact)).astype(jnp.int32)
  val_if_large = jnp.minimum(val_if_large, num_buckets - 1)
  return ret + jnp.where(is_small, n, val_if_large)


class RelativePositionBiases(nn.Module):
  """Learned per-head bias over relative-position buckets, shared by every layer of a stack.

  Attributes:
    num_buckets / max_distance: bucketing (T5: 32 / 128).
    num_heads: heads.
    bidirectional: True in the encoder, False (causal) in the decoder.
  """
  num_buckets: int
  max_distance: int
  num_heads: int
  bidirectional: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array) -> Array:
    """query_positions [b?, q], key_positions [k] -> bias [b or 1, heads, q, k]."""
    rel_embedding = param_with_axes(self, "rel_embedding", nn.initializers.normal(stddev=1.0),
                                    (self.num_heads, self.num_buckets), ("heads", "relpos_buckets"),
                                    self.param_dtype)
    query_positions = jnp.atleast_2d(query_positions)
    relative = key_positions[None, None, :] - query_positions[:, :, None]  # [b, q, k]
    buckets = relative_position_bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)
    bias = jnp.take(rel_embedding.astype(self.dtype), buckets, axis=1)  # [heads, b, q, k]
    return jnp.transpose(bias, (1, 0, 2, 3))


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "linear": lambda x: x,
}


def activation(name: str) -> Callable[[Array], Array]:
  """Looks up an activation by its config name."""
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def adapted_dropout(slots: Slots, slot: str, where: str, dropout_rate: float, sublayer_input: Array, out: Array,
                    deterministic: bool) -> Array:
  """A sublayer's output [b, l, d] through its post-sublayer adapter slot and its dropout (METHODS.md §D(2)):
  Drop(A(sublayer_input, out)) for attention adapters, A(sublayer_input, Drop(out)) for the slots in
  ADAPTERS_AFTER_DROPOUT (FFN adapters); Drop(out) when the slot is empty. Call it inside a module's compact
  method (the adapter and the dropout become that module's children)."""
  adapter = slots.make(slot, where=where, embed_dim=out.shape[-1])
  dropout = nn.Dropout(dropout_rate)
  after_dropout = slot in ADAPTERS_AFTER_DROPOUT
  if after_dropout:
    out = dropout(out, deterministic=deterministic)
  if adapter is not None:
    out = adapter(sublayer_input, out, deterministic=deterministic).astype(out.dtype)
  return out if after_dropout else dropout(out, deterministic=deterministic)
