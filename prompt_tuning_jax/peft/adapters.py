"""Bottleneck adapters of the unified view (He et al. 2022; METHODS.md §D): sequential (Houlsby, Pfeiffer),
parallel, scaled parallel and attention-head (multi-head) parallel adapters.

One bottleneck with biases, optional input norm N and fixed or learned scale s, 2rd + r + d parameters (+ N's):
  A(z) = s · up(Drop(ReLU(down(N(z)))))
N is the official `adapter_layernorm_option='in'` of attention adapters: LayerNorm on BERT, RMSNorm on T5 (§F).
post_attention_adapter / post_mlp_adapter get the sublayer's input x and output F(x) and return the new
output before the residual (§D(2, 8)): attention adapters before the backbone's dropout (T5 a + Drop(·), BERT
LN(a + Drop(·))), FFN adapters after it, on F(x) = Drop(FFN(x)) (T5 a + ·, BERT LN(a + ·); slots.ADAPTERS_AFTER_DROPOUT):
  'sequential'  F(x) + A(F(x))          Houlsby
  'parallel'    F(x) + A(x)             PA, scaled PA; x is T5's RMS-normed input, BERT's LN-ed stream
  'pfeiffer'    F(x) + A(N0(x + F(x)))  BERT: from the post-FFN stream (NOTE); T5: 'sequential'
attention_head_adapter (attention PA): A(x) [b, l, n·h] from the attention input, added to the concatenated
heads before the frozen `out` projection; `multi_head` gives each head its own bottleneck.

NOTE (Pfeiffer): the official code feeds the adapter LN2(a + Drop(F)) with the layer's frozen LN2, then applies
LN2 to a + F + A(·) again. A slot cannot reach LN2, but its affine folds exactly into down,
ReLU((γ·n + β) W + b) = ReLU(n (diag(γ) W) + (βW + b)), so N0 (LayerNorm statistics, no affine, no
parameters) spans the same functions; only the init differs. Pre-LN T5
has no post-FFN norm and its slot sees RMS(a), not the stream a: Pfeiffer there is a sequential FFN adapter.
Init 'bert': N(0, 0.02) kernels, zero biases (Houlsby config). 'lora': down Kaiming-uniform(a=√5), up = 0,
zero biases (scaled PA, MAM): A(z) = 0, so the model starts as the base model exactly.
"""
import dataclasses
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers
from prompt_tuning_jax.peft.lora import INITS

Array = jax.Array
INSERTIONS = ("sequential", "parallel", "pfeiffer")
NORMS = {"bert": lambda: layers.LayerNorm(epsilon=1e-5, name="input_norm"),  # PyTorch's default eps, as official
         "t5": lambda: layers.RMSNorm(epsilon=1e-6, name="input_norm")}
PFEIFFER_EPSILON = 1e-12  # BERT's LayerNorm epsilon


class Bottleneck(nn.Module):
  """A(z) = s · up(Drop(ReLU(down(N(z))))); subclasses choose z and where A(z) goes.

  Attributes:
    bottleneck_dim: r.
    init_scheme: 'bert' or 'lora' (module docstring).
    norm: None, or the backbone ('t5' | 'bert') whose norm N runs on the adapter input.
    scale: s, a float, or 'learned' (a scalar parameter starting at 1, as the official `learnable_scalar`).
    use_bias: biases on down and up.
    dropout_rate: on the r bottleneck units.
  """
  bottleneck_dim: int
  init_scheme: str = "bert"
  norm: Optional[str] = None
  scale: Union[float, str] = 1.0
  use_bias: bool = True
  dropout_rate: float = 0.1
  param_dtype: Any = jnp.float32

  def dense(self, features: int, axes: tuple[str, str], init, dtype, name: str) -> layers.Dense:
    return layers.Dense(features, axes, self.use_bias, init, dtype, self.param_dtype, name=name)

  def bottleneck(self, z: Array, features: int, out_axis: str, num_heads: int, deterministic: bool) -> Array:
    """z [b, l, d] -> A(z) [b, l, features] (logical axis out_axis); num_heads > 1: per-head bottlenecks."""
    down_init, up_init = INITS[self.init_scheme]
    dtype = z.dtype
    if self.norm is not None:
      z = NORMS[self.norm]()(z)
    r = self.bottleneck_dim
    hidden = self.dense(num_heads * r, ("embed", "adapter"), down_init, dtype, "down")(z)  # -> [b, l, n*r]
    hidden = nn.Dropout(self.dropout_rate)(jax.nn.relu(hidden), deterministic=deterministic)
    if num_heads == 1:
      out = self.dense(features, ("adapter", out_axis), up_init, dtype, "up")(hidden)
    else:
      out = HeadwiseDense(num_heads, features // num_heads, up_init, self.use_bias, self.param_dtype, name="up")(
          hidden.reshape(hidden.shape[:-1] + (num_heads, r)))  # [b, l, n*r] -> [b, l, n, r] -> [b, l, n*h]
    if self.scale == "learned":
      scale = layers.param_with_axes(self, "scale", nn.initializers.ones, (), (), self.param_dtype)
      return out * scale.astype(out.dtype)
    return out * self.scale


class HeadwiseDense(nn.Module):
  """Per-head up projections: [b, l, n, r] -> [b, l, n*h] with kernel [n, r, h] and bias [n, h]."""
  num_heads: int
  head_dim: int
  kernel_init: Any
  use_bias: bool = True
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    n, r = x.shape[-2:]
    kernel = layers.param_with_axes(self, "kernel", self.kernel_init, (n, r, self.head_dim),
                                    ("heads", "adapter", "kv"), self.param_dtype)
    y = jnp.einsum("...nr,nrh->...nh", x, kernel.astype(x.dtype))
    if self.use_bias:
      y = y + layers.param_with_axes(self, "bias", nn.initializers.zeros, (n, self.head_dim), ("heads", "kv"),
                                     self.param_dtype).astype(x.dtype)
    return y.reshape(y.shape[:-2] + (n * self.head_dim,))  # [b, l, n, h] -> [b, l, n*h]


class SublayerAdapter(Bottleneck):
  """The post_attention_adapter / post_mlp_adapter slots: F(x) + A(z), z chosen by `insertion`.

  Attributes (besides Bottleneck's):
    insertion: 'sequential' (z = F(x)), 'parallel' (z = x) or 'pfeiffer' (z = N0(x + F(x))).
  """
  insertion: str = "parallel"

  @nn.compact
  def __call__(self, sublayer_input: Array, sublayer_output: Array, *, deterministic: bool = True) -> Array:
    """x [b, l, d] and F(x) [b, l, d] -> the new sublayer output [b, l, d]."""
    if self.insertion == "pfeiffer":  # N0 in float32, as the backbone's norms
      z = jax.nn.standardize((sublayer_input + sublayer_output).astype(jnp.float32), epsilon=PFEIFFER_EPSILON)
      z = z.astype(sublayer_output.dtype)
    else:
      z = sublayer_output if self.insertion == "sequential" else sublayer_input
    delta = self.bottleneck(z, z.shape[-1], "embed", 1, deterministic)
    return sublayer_output + delta.astype(sublayer_output.dtype)


class HeadAdapter(Bottleneck):
  """The attention_head_adapter slot: A(x) [b, l, n*h], added to the concatenated heads before `out`.

  Attributes (besides Bottleneck's):
    num_heads / head_dim: n, h of the host attention. multi_head: one bottleneck of width r per head.
  """
  num_heads: int = dataclasses.field(kw_only=True)
  head_dim: int = dataclasses.field(kw_only=True)
  multi_head: bool = False

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    """x [b, l, d], the attention's query input -> [b, l, n*h]."""
    heads = self.num_heads if self.multi_head else 1
    return self.bottleneck(x, self.num_heads * self.head_dim, "joined_kv", heads, deterministic)


def _check(bottleneck_dim: int, init: str, scale: Union[float, str]) -> None:
  """Errors that name the bad option, shared by both factories."""
  if bottleneck_dim < 1:
    raise ValueError(f"adapter bottleneck_dim={bottleneck_dim}; expected at least 1")
  if init not in INITS:
    raise ValueError(f"adapter init={init!r}; known: {sorted(INITS)}")
  if isinstance(scale, str) and scale != "learned":
    raise ValueError(f"adapter scale={scale!r}; expected a number or 'learned'")


def adapter_factory(*, where: str, backbone: str, embed_dim: int, bottleneck_dim: int,
                    insertion: str = "parallel", scale: Union[float, str] = 1.0, init: str = "bert",
                    input_norm: bool = False, dropout_rate: float = 0.1, use_bias: bool = True) -> SublayerAdapter:
  """The post_attention_adapter / post_mlp_adapter slots: a `SublayerAdapter` named after `where`'s last part:
  adapter_attention, adapter_self_attention, adapter_encoder_decoder_attention, adapter_mlp. Gin scopes give
  the two slots different settings (methods/sequential_adapter.gin).

  Args:
    where / backbone / embed_dim: from the backbone (models/slots.py).
    bottleneck_dim: r. insertion: 'sequential', 'parallel' or 'pfeiffer' (FFN only; module docstring).
    scale: s (a number) or 'learned'. init: 'bert' or 'lora'.
    input_norm: the backbone's norm on the adapter input (official attention adapters have it).
    dropout_rate: on the bottleneck (the model's 0.1 by default). use_bias: biases on down and up.
  """
  del embed_dim  # The adapter's width comes from its input.
  _check(bottleneck_dim, init, scale)
  if insertion not in INSERTIONS:
    raise ValueError(f"adapter insertion={insertion!r}; known: {INSERTIONS}")
  if insertion == "pfeiffer" and not where.endswith("mlp"):
    raise ValueError(f"insertion='pfeiffer' acts after the FFN; bind it to post_mlp_adapter, not at {where!r}")
  if insertion == "pfeiffer" and backbone == "t5":
    insertion = "sequential"  # Pre-LN: no post-FFN norm to act after (module docstring NOTE).
  return SublayerAdapter(bottleneck_dim, init, backbone if input_norm else None, scale, use_bias, dropout_rate,
                         insertion=insertion, name=f"adapter_{where.split('/')[-1]}")


def head_adapter_factory(*, where: str, backbone: str, embed_dim: int, num_heads: int, head_dim: int,
                         bottleneck_dim: int, multi_head: bool = False, scale: Union[float, str] = 1.0,
                         init: str = "bert", input_norm: bool = True, dropout_rate: float = 0.1,
                         use_bias: bool = True) -> HeadAdapter:
  """The attention_head_adapter slot (attention PA): a `HeadAdapter` named 'adapter_heads' in every attention.

  Args:
    where / backbone / embed_dim / num_heads / head_dim: from the backbone (models/slots.py).
    bottleneck_dim: r (per head when multi_head).
    multi_head: one bottleneck per head: down d -> n·r, up block-diagonal n·r -> n·h. NOTE: the official
      MH adapter reuses the frozen W_q for its down projection (W_q^(i) D_i, D_i [h, r]); a slot cannot reach
      W_q, so ours learns each head's [d, r] directly (n·r·(d + h) + biases instead of 2·r·d).
    scale / init / input_norm / dropout_rate / use_bias: as adapter_factory (input_norm on, as official).
  """
  del where, embed_dim
  _check(bottleneck_dim, init, scale)
  return HeadAdapter(bottleneck_dim, init, backbone if input_norm else None, scale, use_bias, dropout_rate,
                     num_heads=num_heads, head_dim=head_dim, multi_head=multi_head, name="adapter_heads")
