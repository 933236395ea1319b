"""INITIAL_CHECKPOINT_PATH: the frozen base weights, from a HF directory or a t5x checkpoint.

The format is detected from the path (config.json -> HF; a `checkpoint` file or checkpoint_<step>/
directories -> t5x). Every tensor is checked against the model's abstract shapes, and a scanned model
(`scan_layers=True`) gets its layers stacked.
"""
import os

import flax.linen as nn
import numpy as np

from prompt_tuning_jax.checkpoints import hf_io, t5x
from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.models import inputs as model_inputs
from prompt_tuning_jax.models.slots import NO_SLOTS


def load_initial_checkpoint(path: str, model: nn.Module) -> dict:
  """Reads `path` (HF directory or t5x checkpoint) into the *base* params of `model` (T5 or BERT).

  PEFT parameters are not part of a base checkpoint: they come from `model.init` (see peft/trainable.py
  `merge`). The returned tree is what `model.clone(slots=NO_SLOTS)` expects.
  """
  base = model.clone(slots=NO_SLOTS)
  if os.path.isfile(os.path.join(path, "config.json")):
    return _load_hf(path, base)
  args, kwargs = model_inputs.example_inputs(base)
  expected = hf_io.abstract_params(base, *args, **kwargs)
  tree = t5x.load_t5x_checkpoint(path)
  scanned = getattr(model.config, "scan_layers", False)
  if scanned:
    from prompt_tuning_jax.models.t5 import scan_params  # pylint: disable=g-import-not-at-top
    tree = scan_params(tree)
  flat = flatten_params(tree)
  names = {p: (p, False) for p in expected}
  return hf_io.params_from_tensors(expected, names, {k: np.asarray(v) for k, v in flat.items()}, path)


def _load_hf(path: str, model: nn.Module) -> dict:
  """HF directory -> params, after checking that its config matches the model's."""
  from prompt_tuning_jax.checkpoints import hf_bert, hf_t5  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models.t5 import T5, scan_params  # pylint: disable=g-import-not-at-top
  if isinstance(model, T5):
    loaded_model, params = hf_t5.load_hf_t5(path)
    _check_same_config(path, loaded_model.config, model.config, ignore=("dtype", "param_dtype", "scan_layers",
                                                                        "remat_policy", "dropout_rate"))
    return scan_params(params) if model.config.scan_layers else params
  head = next((name for name, cls in hf_bert.HEADS.items() if isinstance(model, cls)), None)
  loaded_model, params = hf_bert.load_hf_bert(path, head=head, num_labels=model.config.num_labels)
  _check_same_config(path, loaded_model.config, model.config,
                     ignore=("dtype", "param_dtype", "dropout_rate", "attention_dropout_rate", "num_labels"))
  return params


def _check_same_config(path: str, found, wanted, ignore: tuple[str, ...]) -> None:
  for field in found.__dataclass_fields__:
    if field not in ignore and getattr(found, field) != getattr(wanted, field):
      raise ValueError(f"{path}: checkpoint has {field}={getattr(found, field)!r}, "
                       f"the configured model has {getattr(wanted, field)!r}")
