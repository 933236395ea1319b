"""Prefix tuning (Li & Liang 2021) as in the unified view (He et al. 2022; METHODS.md §D).

The `attention_kv_prefix` slot: every attention sublayer (T5 encoder self-, decoder self- and decoder
cross-attention; BERT self-attention) gets its own l learned keys and values P_k, P_v [l, n, h].
models/attention.py prepends them to the keys and values with zero bias columns that no mask hides
(no relative-position bias on T5, visible under the causal mask), and scales their logits like the rest
(none on T5, 1/sqrt(h) on BERT). Per head that is the gated adapter of §D(1):
  h ← (1 − λ(x)) attn(x) + λ(x) softmax(q P_kᵀ) P_v,
  λ = Σ exp(q P_kᵀ) / (Σ exp(q P_kᵀ) + Σ exp(q Kᵀ + bias))      (sums over the visible columns).
`gated=False` is the paper's plain-addition ablation, h ← attn(x) + softmax(q P_kᵀ) P_v (the slot returns
the flag with the keys and values; attention.py computes either form).

Two parameterisations, both named 'prefix' (`.../attention/prefix/...`):
  direct (`Prefix`): key, value [l, n·h], drawn N(0, 0.02) (the official `prefix_nomlp`): 2·l·n·h
      parameters per attention sublayer, the count §D(3) reports.
  MLP (`PrefixMLP`, the official default): P = tanh(E W1 + b1) W2 + b2 with E [l, e] ~ N(0, 1), W1 [e, 800],
      W2 [800, 2·n·h]; kernels Kaiming-uniform(a=√5) as PyTorch's nn.Linear, biases 0 (PyTorch: uniform):
      l·e + 800·(e + 1) + 801·2·n·h parameters per sublayer. NOTE: the official code has one network per
      attention type whose W2 emits all L layers at once; the slot is per sublayer, so here each sublayer
      owns its network. Per-layer W2 blocks are the same thing; E and W1 are not shared across layers
      (L times their count). The network only helps training: `fold_prefix_mlp` turns trained parameters
      into direct ones, which are all that need storing; the direct model then computes the same function.
"""
from collections.abc import Mapping
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers
from prompt_tuning_jax.peft.lora import KAIMING_UNIFORM

Array = jax.Array
SITES = ("encoder/attention", "decoder/self_attention", "decoder/encoder_decoder_attention")
MLP_PARAMS = frozenset({"embedding", "hidden", "output"})


def _per_example(prefix: Array, batch: int, num_heads: int) -> Array:
  """[l, n*h] -> [b, l, n, h]."""
  length, inner = prefix.shape
  return jnp.broadcast_to(prefix.reshape(length, num_heads, inner // num_heads),
                          (batch, length, num_heads, inner // num_heads))


class Prefix(nn.Module):
  """Directly learned prefixes `key`, `value` [l, n*h].

  Attributes:
    length: l. num_heads / head_dim: n, h of the host attention.
    gated: True: prefix columns join the softmax (prefix tuning); False: plain addition (ablation).
    stddev: of the N(0, stddev) init.
  """
  length: int
  num_heads: int
  head_dim: int
  gated: bool = True
  stddev: float = 0.02
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, batch: int) -> tuple[Array, Array, bool]:
    """-> (keys, values, gated): keys and values [batch, l, n, h]."""
    make = lambda name: layers.param_with_axes(self, name, nn.initializers.normal(self.stddev),
                                               (self.length, self.num_heads * self.head_dim),
                                               ("prefix", "joined_kv"), self.param_dtype)
    key, value = make("key"), make("value")
    return _per_example(key, batch, self.num_heads), _per_example(value, batch, self.num_heads), self.gated


class PrefixMLP(nn.Module):
  """Prefixes produced by an MLP from a learned embedding (the reparameterisation, training only).

  Attributes:
    length / num_heads / head_dim / gated: as `Prefix`.
    hidden_dim: the MLP's width (official `mid_dim`, 800).
    embedding_dim: e, the embedding's width; None = n*h (the official d_model).
  """
  length: int
  num_heads: int
  head_dim: int
  gated: bool = True
  hidden_dim: int = 800
  embedding_dim: Optional[int] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def prefixes(self) -> tuple[Array, Array]:
    """-> (key, value), each [l, n*h]: tanh(E W1 + b1) W2 + b2, split in halves."""
    inner = self.num_heads * self.head_dim
    embedding = layers.param_with_axes(self, "embedding", nn.initializers.normal(1.0),
                                       (self.length, self.embedding_dim or inner), ("prefix", "embed"),
                                       self.param_dtype)
    dense = lambda features, axes, name: layers.Dense(features, axes, True, KAIMING_UNIFORM,
                                                      param_dtype=self.param_dtype, name=name)
    hidden = jnp.tanh(dense(self.hidden_dim, ("embed", "adapter"), "hidden")(embedding))  # [l, e] -> [l, 800]
    key, value = jnp.split(dense(2 * inner, ("adapter", "joined_kv"), "output")(hidden), 2, axis=-1)
    return key, value

  def __call__(self, batch: int) -> tuple[Array, Array, bool]:
    """-> (keys, values, gated): keys and values [batch, l, n, h]."""
    key, value = self.prefixes()
    return _per_example(key, batch, self.num_heads), _per_example(value, batch, self.num_heads), self.gated


def prefix_factory(*, where: str, backbone: str, num_heads: int, head_dim: int, length: int = 30,
                   reparameterize: bool = True, gated: bool = True, hidden_dim: int = 800,
                   stddev: float = 0.02) -> nn.Module:
  """The `attention_kv_prefix` slot: a `PrefixMLP` (or `Prefix`) named 'prefix' in every attention.

  Args:
    where / backbone / num_heads / head_dim: from the backbone (models/slots.py).
    length: l, prefix rows per attention sublayer.
    reparameterize: train through the MLP (official default); False learns the prefixes directly.
    gated: False gives the plain-addition ablation.
    hidden_dim: the MLP's width. stddev: the direct prefixes' init.
  """
  del backbone  # attention.py applies the backbone's logit scale to the prefix columns too.
  if where not in SITES:
    raise ValueError(f"prefix: attention_kv_prefix called at {where!r}; known sites: {SITES}")
  if length < 1:
    raise ValueError(f"prefix length={length}; expected at least 1")
  if reparameterize:
    return PrefixMLP(length, num_heads, head_dim, gated, hidden_dim, name="prefix")
  return Prefix(length, num_heads, head_dim, gated, stddev, name="prefix")


def _fold(mlp_params: Mapping) -> dict:
  """One PrefixMLP's params (any leading layer axes, as scanned stacks have) -> {'key', 'value'}."""
  embedding, output = mlp_params["embedding"], mlp_params["output"]["kernel"]
  length, inner = embedding.shape[-2], output.shape[-1] // 2
  module = PrefixMLP(length, 1, inner, hidden_dim=mlp_params["hidden"]["kernel"].shape[-1],
                     embedding_dim=embedding.shape[-1])
  fold = lambda p: module.apply({"params": p}, method=PrefixMLP.prefixes)
  for _ in range(embedding.ndim - 2):  # [L, ...] params of a scanned stack
    fold = jax.vmap(fold)
  key, value = fold(mlp_params)
  return {"key": key, "value": value}


def fold_prefix_mlp(params: Mapping) -> dict:
  """Replaces every MLP-reparameterised 'prefix' in `params` (plain, unboxed) by the direct prefixes it makes.

  The result loads into the same model built with `reparameterize=False` and computes the same function.
  """
  found = []

  def visit(tree: Mapping) -> dict:
    out = {}
    for name, value in tree.items():
      if name == "prefix" and isinstance(value, Mapping) and set(value) == MLP_PARAMS:
        found.append(name)
        out[name] = _fold(value)
      else:
        out[name] = visit(value) if isinstance(value, Mapping) else value
    return out

  folded = visit(params)
  if not found:
    raise ValueError("fold_prefix_mlp: no MLP-reparameterised 'prefix' (embedding, hidden, output) in params")
  return folded
