"""LoRA (Hu et al. 2021) as an instance of the unified view (He et al. 2022; METHODS.md §D).

The `projection_delta` slot: a frozen projection y = x W gains a parallel, scaled low-rank path

  y = x W + (alpha / r) · Drop(x) A B          A [in, r], B [r, out]

(`petl_factory.py::Linear` in the official code). Targets are the frozen kernels' names: attention
'query', 'key', 'value', 'out' and FFN 'wi' (T5 1.0, BERT), 'wi_0', 'wi_1' (T5 1.1) and 'wo'. The default
is ('query', 'value'), in every attention of the model: 4·r·d parameters per attention sublayer when
n·h = d. LoRA-ffn on T5 1.1 covers wi_0, wi_1 and wo: 3·r·(d + f) per FFN (§D(8)).

Parameters: `.../<attention or mlp>/lora_<target>/{a, b}`. Init 'lora': A Kaiming-uniform(a=√5) as
PyTorch's, B = 0, so the model starts as the base model exactly; 'bert': both N(0, 0.02).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers

Array = jax.Array

KAIMING_UNIFORM = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
"""PyTorch's kaiming_uniform_(a=√5) (nn.Linear's default): U(±1/sqrt(fan_in)), fan_in = kernel.shape[0]."""
BERT_INIT = nn.initializers.normal(stddev=0.02)
INITS = {"lora": (KAIMING_UNIFORM, nn.initializers.zeros), "bert": (BERT_INIT, BERT_INIT)}
# The logical axes of each frozen kernel [in, out] LoRA can target; A and B follow them, so B shards like W.
TARGET_AXES = {
    "query": ("embed", "joined_kv"), "key": ("embed", "joined_kv"), "value": ("embed", "joined_kv"),
    "out": ("joined_kv", "embed"),
    "wi": ("embed", "mlp"), "wi_0": ("embed", "mlp"), "wi_1": ("embed", "mlp"), "wo": ("mlp", "embed"),
}


class LoRA(nn.Module):
  """The low-rank path (alpha / r) · Drop(x) A B of one frozen projection.

  Attributes:
    rank: r. alpha: the scale is alpha / rank.
    out_features: the frozen projection's output size.
    kernel_axes: the frozen kernel's logical axes (in, out); A is (in, 'lora_rank'), B ('lora_rank', out).
    dropout_rate: on the input x of the low-rank path.
    init_scheme: 'lora' (A Kaiming-uniform, B zero) or 'bert' (both N(0, 0.02)).
  """
  rank: int
  alpha: float
  out_features: int
  kernel_axes: tuple[str, str]
  dropout_rate: float = 0.0
  init_scheme: str = "lora"
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, deterministic: Optional[bool] = None) -> Array:
    """x [..., in] -> [..., out_features], added to the frozen projection's output.

    NOTE: the projection_delta slot passes no `deterministic` (models/slots.py); when it is None, dropout
    runs exactly when the caller supplied a 'dropout' rng, which our train step does iff dropout is on.
    """
    a_init, b_init = INITS[self.init_scheme]
    a = layers.param_with_axes(self, "a", a_init, (x.shape[-1], self.rank), (self.kernel_axes[0], "lora_rank"),
                               self.param_dtype)
    b = layers.param_with_axes(self, "b", b_init, (self.rank, self.out_features), ("lora_rank", self.kernel_axes[1]),
                               self.param_dtype)
    if deterministic is None:
      deterministic = not self.has_rng("dropout")
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    down = jnp.dot(x, a.astype(x.dtype))  # [..., in] -> [..., r]
    return jnp.dot(down, b.astype(x.dtype)) * jnp.asarray(self.alpha / self.rank, x.dtype)


def lora_factory(*, where: str, backbone: str, target: str, in_features: int, out_features: int,
                 rank: int = 8, alpha: float = 16.0, targets: Sequence[str] = ("query", "value"),
                 dropout_rate: float = 0.0, init: str = "lora") -> Optional[LoRA]:
  """The `projection_delta` slot: a `LoRA` named 'lora_<target>' on the chosen targets, None elsewhere.

  Args:
    where / backbone / target / in_features / out_features: from the backbone (models/slots.py).
    rank: r. alpha: the scale alpha / r (s = 2 by default; the paper tunes s, s = 4 is best for LoRA-ffn).
    targets: frozen kernel names to adapt, from TARGET_AXES (every site that has them).
    dropout_rate: on the low-rank path's input (the official default is 0).
    init: 'lora' (the model starts as the base model exactly) or 'bert'.
  """
  del where, backbone, in_features  # Every site with a targeted kernel gets LoRA; A's width comes from x.
  unknown = sorted(set(targets) - set(TARGET_AXES))
  if unknown:
    raise ValueError(f"LoRA targets={tuple(targets)} has unknown {unknown}; known: {sorted(TARGET_AXES)}")
  if rank < 1:
    raise ValueError(f"LoRA rank={rank}; expected at least 1")
  if init not in INITS:
    raise ValueError(f"LoRA init={init!r}; known: {sorted(INITS)}")
  if target not in targets:
    return None
  return LoRA(rank, alpha, out_features, TARGET_AXES[target], dropout_rate, init, name=f"lora_{target}")
