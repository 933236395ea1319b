"""FLOPs of one train step of a gin-configured model + method, from XLA's cost analysis of the lowered step.

  flops = train_step_flops(['models/t5_1_1_xxl.gin', 'methods/lora.gin'], batch_size=8, input_length=512,
                           target_length=8)

Nothing is allocated: the parameters, the optimizer state and the batch are `jax.ShapeDtypeStruct`s
(`jax.eval_shape`), and `jax.jit(step).lower(...)` is analysed without compiling, so XXL reports on a laptop.
The step is train/train_step.py's (forward, backward over the trainable partition, the method's OPTIMIZER).
NOTE: XLA counts a multiply-add as 2 FLOPs; the analysis is of the unoptimised HLO (before fusion).
"""
from typing import Any, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from prompt_tuning_jax import gin_utils, runs
from prompt_tuning_jax.models import inputs, t5
from prompt_tuning_jax.params import configured
from prompt_tuning_jax.peft import trainable
from prompt_tuning_jax.train import train_step


def abstract_batch(model: Any, batch_size: int, input_length: int, target_length: int) -> dict:
  """ShapeDtypeStructs of a training batch (models/inputs.py formats): [b, l] tokens, [b, t] targets."""
  def spec(length, dtype=jnp.int32):
    return jax.ShapeDtypeStruct((batch_size, length), dtype)
  if isinstance(model, t5.T5):
    return {"encoder_input_tokens": spec(input_length), "decoder_input_tokens": spec(target_length),
            "decoder_target_tokens": spec(target_length),
            "decoder_loss_weights": spec(target_length, jnp.float32)}
  return {"input_ids": spec(input_length), "attention_mask": spec(input_length),
          "token_type_ids": spec(input_length), "labels": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}


def train_step_flops(gin_files: Sequence[str], gin_bindings: Sequence[str] = (), *, batch_size: int,
                     input_length: int, target_length: int = 0) -> float:
  """FLOPs of one train step at [batch_size, input_length (+ target_length)] (module docstring)."""
  gin_utils.parse_gin(gin_files, [*gin_bindings, "TRAIN_STEPS = 1000"])  # schedules of method files need it
  model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  args, kwargs = inputs.example_inputs(model)
  shapes = jax.eval_shape(lambda key: nn.meta.unbox(model.init(key, *args, **kwargs)["params"]), jax.random.key(0))
  optimizer = runs.gin_optimizer()  # the method file's OPTIMIZER, as a run builds it
  mask = configured(trainable.trainable_mask)(shapes)
  state, frozen = jax.eval_shape(lambda p: train_step.init_train_state(p, mask, optimizer), shapes)
  step = train_step.train_step_fn(train_step.loss_fn_for(model), optimizer)
  batch = abstract_batch(model, batch_size, input_length, target_length)
  analysis = jax.jit(step).lower(state, frozen, batch, None).cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
    analysis = analysis[0]
  return float(analysis["flops"])
