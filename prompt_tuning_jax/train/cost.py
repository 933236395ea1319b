"""FLOPs of one train step, from XLA's cost analysis of the step lowered on abstract values.

  batch = abstract_batch(model, batch_size=8, input_length=512, target_length=8)   # ShapeDtypeStructs
  lowered = lower_train_step(model, optimizer, mask_fn, batch)
  flops(lowered), flops(lowered.compile())        # traced (before XLA's optimisations) and compiled counts

The step is train/train_step.py's (forward, backward over the trainable partition, the optimizer update).
Nothing is allocated: the parameters (models/inputs.py `abstract_params`), the train state and the batch are
`jax.ShapeDtypeStruct`s, so an XXL step reports on a laptop. Used by experiments/step_flops.py (gin-configured
models), the benchmark (bench/ours.py) and the FLOPs claim of DESIGN.md (tests/train/test_train_step.py).
NOTE: XLA counts a multiply-add as 2 FLOPs, and a while loop's body once: lower an unscanned model
(`scan_layers=False`) to count every layer.
"""
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import optax

from prompt_tuning_jax.models import inputs, t5
from prompt_tuning_jax.train import train_step


def abstract_batch(model: nn.Module, batch_size: int, input_length: int, target_length: int = 0
                   ) -> dict[str, jax.ShapeDtypeStruct]:
  """The shapes and dtypes of a training batch (models/inputs.py formats).

  T5: encoder tokens [b, input_length], decoder tokens / targets / loss weights [b, target_length]. BERT:
  input_ids, attention_mask, token_type_ids [b, input_length] and labels ([b], or [b, input_length] for
  token classification); target_length is not read.
  """
  if isinstance(model, t5.T5) and target_length < 1:
    raise ValueError(f"abstract_batch: a T5 step needs target_length >= 1, got {target_length} "
                     f"(input_length={input_length})")
  batch = inputs.example_batch(model, batch_size, input_length, target_length)
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}


def lower_train_step(model: nn.Module, optimizer: optax.GradientTransformation,
                     mask_fn: Callable[[dict], dict], batch: dict[str, jax.ShapeDtypeStruct],
                     prepare_frozen: Optional[Callable[[dict], dict]] = None) -> jax.stages.Lowered:
  """The jitted train step of `model`, lowered (not compiled) on abstract values.

  Args:
    model: a T5 or BERT model (train_step.loss_fn_for's).
    optimizer: the optimizer the state is built for (its state's size is part of the step).
    mask_fn: parameter tree -> trainable mask (peft/trainable.py), called on the abstract parameters.
    batch: ShapeDtypeStructs of one batch (`abstract_batch`, or a real batch's shapes).
    prepare_frozen: frozen partition -> frozen partition (e.g. the benchmark casts it); traced, not run.
  """
  params = inputs.abstract_params(model)
  mask = mask_fn(params)

  def init(tree: dict) -> tuple[train_step.TrainState, dict]:
    state, frozen = train_step.init_train_state(tree, mask, optimizer)
    return state, frozen if prepare_frozen is None else prepare_frozen(frozen)

  state, frozen = jax.eval_shape(init, params)
  return train_step.make_train_step(train_step.loss_fn_for(model), optimizer).lower(state, frozen, batch, None)


def flops(stage: Any) -> float:
  """FLOPs in XLA's cost analysis of a lowered or compiled computation (0.0 when it reports none).

  NOTE: older jax versions return one analysis per computation (a list); the first is the entry computation.
  """
  analysis = stage.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float((analysis or {}).get("flops", 0.0))
