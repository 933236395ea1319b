"""FL-tuning (Liu et al. 2022, arXiv 2206.15312; METHODS.md §B): k extra hidden units in every FFN.

The `mlp_extra` slot. The extra units read the host FFN's input x and their output is added to the host
FFN's output before its dropout, residual add (and LayerNorm on BERT):
  T5 1.0:  ReLU(x Wi') Wo'                                 2·d·k per FFN, no biases
  T5 1.1:  (gelu_tanh(x Wi0') ⊙ (x Wi1')) Wo'              3·d·k per FFN, no biases
  BERT:    GELU(x W1' + b1') W2' + b2'                     2·d·k + k + d per FFN
The activations are the host FFN's (handed over by MlpBlock), so the T5 forms are exactly an FFN widened
from f to f + k units: [Wi | Wi'], [Wo ; Wo']. BERT keeps the official code's separate output bias b2'
(a complete second FeedForward block summed with the first), which the widened FFN would not have.

Parameters live in `.../mlp/fl_units/{wi | wi_0, wi_1, wo}/{kernel, bias}`, named like the host's.
Counts with k = 160: T5 1.1 base 8,847,360 (encoder + decoder; 4,423,680 encoder only), T5 1.0 base
5,898,240, BERT-base 2,960,256 (+ the classifier head, which trains as in the official code).
Init: truncated normal, std 0.02 (bert4keras' initializer) for every kernel, zero biases, so the model's
function changes at step 0 (the official behaviour); `zero_output_init` zeroes Wo' instead, and the model
then starts as the base model exactly.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers

Array = jax.Array
# NOTE: like Keras' TruncatedNormal(stddev=0.02), stddev is that of the normal before truncation at ±2σ.
KERNEL_INIT = nn.initializers.truncated_normal(stddev=0.02)
STACKS = ("encoder", "decoder")


class FLUnits(nn.Module):
  """k extra FFN units: `wo(act_0(wi_0 x) * act_1(wi_1 x) * ...)` (+ biases on BERT).

  Attributes:
    num_units: k, the extra hidden units.
    activations: the host FFN's, e.g. ('relu',), ('gelu',), ('gelu_tanh', 'linear').
    use_bias: biases b1' (hidden) and b2' (output), BERT's layout.
    intermediate_dropout_rate: dropout on the k hidden units (the host FFN's hidden-unit dropout).
    zero_output_init: Wo' starts at zero, so the units start with zero output.
    param_dtype: of the new kernels; computation runs in the input's dtype.
  """
  num_units: int
  activations: Sequence[str]
  use_bias: bool = False
  intermediate_dropout_rate: float = 0.0
  zero_output_init: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    """x [b, l, d], the host FFN's input -> [b, l, d], added to the host FFN's output."""
    dense = lambda features, axes, init, name: layers.Dense(features, axes, self.use_bias, init, x.dtype,
                                                             self.param_dtype, name=name)
    hidden = None
    for i, name in enumerate(self.activations):
      kernel_name = "wi" if len(self.activations) == 1 else f"wi_{i}"
      h = layers.activation(name)(dense(self.num_units, ("embed", "fl_units"), KERNEL_INIT, kernel_name)(x))
      hidden = h if hidden is None else hidden * h  # [b, l, d] -> [b, l, k]
    hidden = nn.Dropout(self.intermediate_dropout_rate)(hidden, deterministic=deterministic)
    out_init = nn.initializers.zeros if self.zero_output_init else KERNEL_INIT
    return dense(x.shape[-1], ("fl_units", "embed"), out_init, "wo")(hidden)  # [b, l, k] -> [b, l, d]


def fl_units_factory(*, where: str, backbone: str, embed_dim: int, activations: Sequence[str],
                     num_units: int = 160, stacks: Sequence[str] = STACKS, zero_output_init: bool = False,
                     intermediate_dropout_rate: float = 0.0,
                     unit_activations: Optional[Sequence[str]] = None) -> Optional[FLUnits]:
  """The `mlp_extra` slot: `FLUnits` named 'fl_units' in every FFN of the chosen stacks, None elsewhere.

  Args:
    where / backbone / embed_dim / activations: from the host MlpBlock (models/slots.py); `activations`
      are the host FFN's.
    num_units: k (160 in the official code).
    stacks: which stacks get units: ('encoder', 'decoder') (the default, METHODS §B(8)) or ('encoder',).
      BERT has only an encoder.
    zero_output_init: Wo' = 0 at init (the model starts as the base model exactly); off = the official
      truncated-normal init of every kernel.
    intermediate_dropout_rate: dropout on the k hidden units. T5's own FFN drops its hidden units at the
      model's dropout rate, so set the same rate for an exactly widened FFN in training; BERT's FFN (and
      the official code's extra block) has none.
    unit_activations: override of the units' activations (e.g. ('relu',), the paper figure's); None = the
      host FFN's, as the official code.
  """
  unknown = set(stacks) - set(STACKS)
  if unknown:
    raise ValueError(f"FL-tuning stacks={tuple(stacks)} has unknown {sorted(unknown)}; known: {STACKS}")
  if num_units < 1:
    raise ValueError(f"FL-tuning num_units={num_units}; expected at least 1 extra unit")
  del embed_dim  # The units read it from their input.
  if where.split("/")[0] not in stacks:
    return None
  return FLUnits(num_units, tuple(activations if unit_activations is None else unit_activations),
                 use_bias=backbone == "bert", intermediate_dropout_rate=intermediate_dropout_rate,
                 zero_output_init=zero_output_init, name="fl_units")
