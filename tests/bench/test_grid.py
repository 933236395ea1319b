"""bench/grid.py's methods agree with gin/methods/*.gin, the one registry of methods and their hyperparameters.

The benchmark builds its methods from the peft/*.py factories without gin (GPU machines lack it). Here each
method is built both ways, on a tiny T5 and a tiny BERT: every module its slots make (at every call site)
must have the same fields (sizes, ranks, alphas, scales, insertions, inits, names), the parameter shapes must
be the same, and the trainable masks must agree. Row defaults stand for the gin macros they mirror
(prompt_length = PROMPT_LENGTH, lora_rank = LORA_RANK, lora_alpha = LORA_ALPHA).
NOTE: a prompt's `initializer` is left out: the benchmark draws every prompt from RandomUniform (grid.py's
docstring: table-based inits change the values, not the cost).
"""
import dataclasses
import functools
from typing import Any

import pytest

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.bench import grid
from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.models import bert, inputs, t5
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.peft import trainable

BACKBONES = {
    "t5": lambda slots: t5.T5(grid.TINY["t5_tiny"].replace(num_encoder_layers=2, num_decoder_layers=1), slots),
    "bert": lambda slots: bert.BertForSequenceClassification(grid.TINY["bert_tiny"].replace(num_layers=2), slots),
}
IGNORED_FIELDS = ("parent", "initializer")


def _comparable(value: Any) -> Any:
  """A field value as something `==` compares by content (functools.partial compares by identity)."""
  if isinstance(value, functools.partial):
    return ("partial", value.func, tuple(map(_comparable, value.args)),
            tuple(sorted((k, _comparable(v)) for k, v in value.keywords.items())))
  if isinstance(value, (tuple, list)):
    return tuple(map(_comparable, value))
  return value


def _recording(slots: Slots) -> tuple[Slots, list]:
  """`slots` whose factories record (slot, call site, the module's class and fields) of every call."""
  calls = []

  def wrap(slot, factory):
    def make(**kwargs):
      module = factory(**kwargs)
      fields = None if module is None else (type(module).__name__, {
          f.name: _comparable(getattr(module, f.name)) for f in dataclasses.fields(module)
          if f.name not in IGNORED_FIELDS})
      calls.append((slot, kwargs.get("where"), kwargs.get("target"), fields))
      return module
    return make

  return dataclasses.replace(slots, **{name: wrap(name, f) for name, f in vars(slots).items() if callable(f)}), calls


def _built(slots: Slots, backbone: str) -> tuple[list, dict]:
  """(the recorded slot calls, the abstract parameter tree) of the backbone with `slots`."""
  recording, calls = _recording(slots)
  return calls, inputs.abstract_params(BACKBONES[backbone](recording))


def test_every_method_names_gin_files_that_exist():
  for name, method in grid.METHODS.items():
    for path in method.gin_files or (f"methods/{name}.gin",):
      gin_utils.resolve_gin_file(path)  # FileNotFoundError names the file and close matches


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("name", sorted(grid.METHODS))
def test_the_benchmark_method_is_its_gin_file(name, backbone):
  method = grid.METHODS[name]
  gin_files = method.gin_files or (f"methods/{name}.gin",)
  gin_utils.parse_gin(["models/t5_1_1_small.gin", *gin_files])
  gin_calls, gin_params = _built(gin_utils.configured_macro("MODEL").slots, backbone)
  gin_mask = gin_utils.configured(trainable.trainable_mask)(gin_params)

  row = grid.Row("t5_tiny" if backbone == "t5" else "bert_tiny", name, batch=2, input_length=8, target_length=2)
  bench_calls, bench_params = _built(method.slots(row), backbone)
  bench_mask = trainable.trainable_mask(bench_params, method.patterns, train_all=method.train_all)

  assert bench_calls == gin_calls, f"grid.METHODS[{name!r}] and {gin_files} make different modules ({backbone})"
  shapes = lambda tree: {path: leaf.shape for path, leaf in flatten_params(tree).items()}
  assert shapes(bench_params) == shapes(gin_params)
  assert flatten_params(bench_mask) == flatten_params(gin_mask), f"{name}: trainable masks differ ({backbone})"
  trained = trainable.count(bench_params, bench_mask)
  assert trained == trainable.count(gin_params, gin_mask) and trained > 0
  bound = [slot for slot, value in vars(method.slots(row)).items() if callable(value)]
  assert not bound or any(fields for *_, fields in gin_calls), f"{name}: slots {bound} made no module ({backbone})"


def test_a_changed_hyperparameter_is_caught():
  row = grid.Row("t5_tiny", "lora", batch=2, input_length=8)
  gin_utils.parse_gin(["models/t5_1_1_small.gin", "methods/lora.gin"], ["LORA_RANK = 4"])
  gin_calls, _ = _built(gin_utils.configured_macro("MODEL").slots, "t5")
  bench_calls, _ = _built(grid.METHODS["lora"].slots(row), "t5")
  ranks = lambda calls: {fields[1]["rank"] for *_, fields in calls if fields}
  assert ranks(gin_calls) == {4} and ranks(bench_calls) == {8} and bench_calls != gin_calls
