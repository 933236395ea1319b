"""FLOPs of one train step of a gin-configured model + method, from XLA's cost analysis of the lowered step.

  flops = train_step_flops(['models/t5_1_1_xxl.gin', 'methods/lora.gin'], batch_size=8, input_length=512,
                           target_length=8)

The gin side of train/cost.py (which lowers the step on abstract values, so XXL reports on a laptop): the
parsed MODEL, the method's OPTIMIZER and the gin-configured trainable mask. The step is train/train_step.py's.
NOTE: XLA counts a multiply-add as 2 FLOPs; the analysis is of the unoptimised HLO (before fusion).
"""
from typing import Sequence

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.peft import trainable
from prompt_tuning_jax.train import cost, optimizers


def train_step_flops(gin_files: Sequence[str], gin_bindings: Sequence[str] = (), *, batch_size: int,
                     input_length: int, target_length: int = 0) -> float:
  """FLOPs of one train step at [batch_size, input_length (+ target_length)] (module docstring)."""
  gin_utils.parse_gin(gin_files, [*gin_bindings, "TRAIN_STEPS = 1000"])  # schedules of method files need it
  model = gin_utils.configured_macro("MODEL")
  batch = cost.abstract_batch(model, batch_size, input_length, target_length)
  optimizer = optimizers.gin_optimizer()  # the method file's OPTIMIZER, as a run builds it
  return cost.flops(cost.lower_train_step(model, optimizer, gin_utils.configured(trainable.trainable_mask), batch))
