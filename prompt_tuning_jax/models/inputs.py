"""Example inputs per backbone, so `model.init` / `jax.eval_shape` need no backbone-specific code.

  args, kwargs = example_inputs(model)
  abstract = jax.eval_shape(model.init, jax.random.key(0), *args, **kwargs)
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from prompt_tuning_jax.models import bert, t5

# NOTE: the ids are 1 (not 0 = padding), so every position is real and every code path runs.
ENCODER_LENGTH = 4
DECODER_LENGTH = 2


def example_inputs(model: nn.Module, batch_size: int = 1) -> tuple[tuple[Any, ...], dict[str, Any]]:
  """(args, kwargs) for `model.init(rng, *args, **kwargs)`.

  T5: encoder tokens [b, 4] and decoder tokens [b, 2]. BERT (base model or any head): input_ids [b, 4].
  """
  if isinstance(model, t5.T5):
    return (jnp.ones((batch_size, ENCODER_LENGTH), jnp.int32),
            jnp.ones((batch_size, DECODER_LENGTH), jnp.int32)), {}
  if isinstance(model, (bert.BertModel, *bert.HEADS.values())):
    return (jnp.ones((batch_size, ENCODER_LENGTH), jnp.int32),), {}
  raise TypeError(f"example_inputs: unknown backbone {type(model).__name__}; known: T5, BertModel, "
                  f"{', '.join(cls.__name__ for cls in bert.HEADS.values())}")
