"""What a trained PEFT module looks like, for the training log: its size, to catch a prompt that grows away.

`module_norms(trainable)`: the global L2 norm of each PEFT module's trainable leaves (`norm/<module>`, modules
as peft/trainable.py's `peft_module`; leaves of no PEFT module, such as BitFit's biases, are left out) and, for
a prompt bank `prompt/prompt` [K, P, d], the mean norm of its rows (`prompt_row_norm`), comparable with the
token rows the prompt sits among (9.5 on MiniLM for SST-2 text, scripts/prompt_scale.py).
"""
from typing import Any

import jax
import jax.numpy as jnp

from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.peft import prompt_params, trainable


def module_norms(trainable_params: dict) -> dict[str, float]:
  """{'norm/<module>': float, ..., 'prompt_row_norm': float (when a prompt trains)} of a trainable partition.

  Runs every train step: the reductions stay on device and come back in one transfer.
  """
  squares: dict[str, Any] = {}
  rows = []
  for path, leaf in flatten_params(trainable_params).items():
    module = trainable.peft_module(path)
    if module is None:
      continue  # not inside a PEFT module (full fine-tuning, BitFit)
    squares[module] = squares.get(module, 0.0) + jnp.vdot(leaf, leaf).real
    if prompt_params.is_prompt_bank(path):
      rows.append(jnp.linalg.norm(leaf.reshape(-1, leaf.shape[-1]), axis=-1))
  values = {f"norm/{module}": jnp.sqrt(value) for module, value in sorted(squares.items())}
  if rows:
    values["prompt_row_norm"] = jnp.concatenate(rows).mean()
  return {name: float(value) for name, value in jax.device_get(values).items()}
