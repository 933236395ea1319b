"""Position-wise feed-forward block (T5 1.0 ReLU, T5 1.1 gated-GELU, BERT GELU with biases)."""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers
from prompt_tuning_jax.models.slots import NO_SLOTS, Slots

Array = jax.Array


class MlpBlock(nn.Module):
  """`wo(act_0(wi_0 x) * act_1(wi_1 x) * ...)`; one activation names its kernel `wi` (t5x names).

  Attributes:
    mlp_dim: hidden units.
    activations: e.g. ('relu',) for T5 1.0 / BERT ('gelu',), ('gelu_tanh', 'linear') for T5 1.1.
    where: call-site name for slot factories ('encoder/mlp', 'decoder/mlp').
    use_bias: BERT kernels carry biases.
    intermediate_dropout_rate: dropout on the hidden units (T5 uses the model rate, BERT none).
    slots: projection_delta (LoRA-ffn on wi/wi_N/wo) and mlp_extra (FL-tuning units, same input x).
  """
  mlp_dim: int
  activations: Sequence[str]
  where: str
  use_bias: bool = False
  intermediate_dropout_rate: float = 0.0
  kernel_init: layers.Initializer = layers.default_kernel_init
  slots: Slots = NO_SLOTS
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _dense(self, name: str, x: Array, features: int, axes: tuple[str, str]) -> Array:
    dense = layers.Dense(features, axes, self.use_bias, self.kernel_init, self.dtype, self.param_dtype, name=name)
    delta = self.slots.make("projection_delta", where=self.where, target=name,
                            in_features=x.shape[-1], out_features=features)
    return layers.with_delta(dense, delta)(x)

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    """[b, l, d] -> [b, l, d]."""
    hidden = None
    for i, name in enumerate(self.activations):
      kernel_name = "wi" if len(self.activations) == 1 else f"wi_{i}"
      h = layers.activation(name)(self._dense(kernel_name, x, self.mlp_dim, ("embed", "mlp")))
      hidden = h if hidden is None else hidden * h  # [b, l, mlp]
    hidden = nn.Dropout(self.intermediate_dropout_rate)(hidden, deterministic=deterministic)
    out = self._dense("wo", hidden, x.shape[-1], ("mlp", "embed"))
    extra = self.slots.make("mlp_extra", where=self.where, embed_dim=x.shape[-1], activations=tuple(self.activations))
    if extra is not None:
      out = out + extra(x, deterministic=deterministic).astype(out.dtype)
    return out
