"""Our side of a row: build the model and train state, compile the step once, time it, read XLA's costs.

  step, finish = ours.prepare(row, options)   # compiled once
  times, _ = timing.interleaved({"ours": step}, options.warmup, options.steps)
  result = finish(times["ours"])             # {'compile_s', 'step_s', 'tokens_per_s', 'flops', ...}

The step is train/train_step.py's (only the trainable partition is differentiated; the state is donated).
It is lowered and compiled once; the timed loop calls the compiled executable, so nothing recompiles.
"""
import functools
import statistics
import time
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import numpy as np

from prompt_tuning_jax.bench import grid
from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning_jax.models import bert, inputs, t5
from prompt_tuning_jax.peft import trainable
from prompt_tuning_jax.train import cost, optimizers, train_step

LEARNING_RATE = 1e-4
OPTIMIZER = optimizers.adamw(LEARNING_RATE)
"""AdamW on both sides (torch: lr 1e-4, weight decay 0.01; ours: 0.01 without norms and biases)."""


def build_model(row: grid.Row, options: grid.Options, scan_layers: Optional[bool] = None) -> nn.Module:
  """T5 or BertForSequenceClassification with the row's method bound to its slots."""
  method = grid.METHODS[row.method]
  scan = options.scan_layers if scan_layers is None else scan_layers
  config = grid.model_config(row.model, options.dtype, scan and not method.needs_unscanned_t5, options.dropout)
  slots = method.slots(row)
  return t5.T5(config, slots) if grid.is_t5(config) else bert.BertForSequenceClassification(config, slots)


def make_batch(model: nn.Module, row: grid.Row, seed: int = 0) -> dict[str, np.ndarray]:
  """models/inputs.py's random batch at the row's shapes (T5: input + target tokens; BERT: input + label)."""
  return inputs.example_batch(model, row.batch, row.input_length, max(row.target_length, 1), seed=seed)


def mask_for(row: grid.Row, params: dict) -> dict:
  """The row's trainable mask (peft/trainable.py) with its method's patterns or train_all."""
  method = grid.METHODS[row.method]
  return trainable.trainable_mask(params, method.patterns, train_all=method.train_all)


CAST_ONCE = ("kernel", "embedding", "rel_embedding")
"""Frozen leaves the layers only ever use after `.astype(dtype)` (layers.py), so casting them to the
activation dtype once keeps the numerics; norm scales and biases stay float32 (used in float32)."""


def cast_frozen(tree: dict, dtype: Optional[str]) -> dict:
  """`tree` with its CAST_ONCE leaves in `dtype` (None: unchanged)."""
  if dtype is None:
    return tree
  flat = flatten_params(tree)
  return unflatten_params({path: x.astype(dtype) if path.rsplit("/", 1)[-1] in CAST_ONCE else x
                           for path, x in flat.items()})


def random_params(model: nn.Module, seed: int = 0) -> dict:
  """Random weights at the model's shapes, drawn on the host: norm scales 1, biases 0, else N(0, 0.02).

  NOTE: not the models' initialisers (XLA compiles those slowly on CPU); timing only needs the shapes, and
  these values keep every activation finite.
  """
  rng = np.random.default_rng(seed)

  def draw(path: str, leaf: jax.ShapeDtypeStruct) -> np.ndarray:
    name = path.rsplit("/", 1)[-1]
    if name in ("scale", "bias"):
      return np.full(leaf.shape, 1.0 if name == "scale" else 0.0, leaf.dtype)
    return (0.02 * rng.standard_normal(leaf.shape, np.float32)).astype(leaf.dtype)

  return unflatten_params({path: jax.device_put(draw(path, leaf))
                           for path, leaf in flatten_params(inputs.abstract_params(model)).items()})


def initial_state(row: grid.Row, options: grid.Options, params: dict) -> tuple[train_step.TrainState, dict]:
  """params -> (TrainState, frozen partition with CAST_ONCE leaves in options.frozen_dtype); traceable."""
  state, frozen = train_step.init_train_state(params, mask_for(row, params), OPTIMIZER)
  return state, cast_frozen(frozen, options.frozen_dtype)


def make_step(model: nn.Module) -> Any:
  return train_step.make_train_step(train_step.loss_fn_for(model), OPTIMIZER)


def setup(model: nn.Module, row: grid.Row, options: grid.Options
          ) -> tuple[Any, train_step.TrainState, dict, dict]:
  """-> (jitted step, state, frozen partition, device batch), on the default device."""
  state, frozen = initial_state(row, options, random_params(model))
  return make_step(model), state, frozen, jax.device_put(make_batch(model, row))


def memory_bytes(compiled: Any) -> Optional[int]:
  """XLA's planned footprint of one step: arguments + outputs - donated aliases + temporaries."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
             + stats.temp_size_in_bytes)


def step_flops(row: grid.Row, options: grid.Options) -> float:
  """Model FLOPs of one train step: XLA's cost analysis of the unscanned step, lowered abstractly.

  NOTE: XLA's cost analysis counts a while loop's body once, so scanned layers would be undercounted; the
  unscanned lowering (no remat either) gives the model FLOPs that MFU uses. Nothing is allocated.
  """
  model = build_model(row, options, scan_layers=False)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in make_batch(model, row).items()}
  return cost.flops(cost.lower_train_step(model, OPTIMIZER, functools.partial(mask_for, row), batch,
                                          functools.partial(cast_frozen, dtype=options.frozen_dtype)))


def device_peak_bytes() -> Optional[int]:
  """The device's peak bytes in use so far (GPU/TPU); None on CPU, which reports no memory stats."""
  stats = jax.devices()[0].memory_stats()
  return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None


def tokens_per_example(row: grid.Row) -> int:
  """Input + target tokens of one example (prompt rows are not counted: both sides get the same input)."""
  return row.input_length + row.target_length


def prepare(row: grid.Row, options: grid.Options) -> tuple[Callable[[], None], Callable[[list[float]], dict]]:
  """Builds and compiles one row -> (step: runs one train step and blocks, finish: timed steps' seconds ->
  the row's result). Times in seconds, memory in bytes (module docstring)."""
  model = build_model(row, options)
  step, state, frozen, batch = setup(model, row, options)
  start = time.perf_counter()
  compiled = step.lower(state, frozen, batch, None).compile()
  compile_s = time.perf_counter() - start
  flops = cost.flops(compiled)
  flops_source = "compiled step"
  if getattr(model.config, "scan_layers", False):
    flops, flops_source = step_flops(row, options), "unscanned lowering"
  carry = {"state": state}

  def one_step() -> None:
    carry["state"], carry["metrics"] = compiled(carry["state"], frozen, batch, None)
    jax.block_until_ready((carry["state"], carry["metrics"]))

  def finish(times: list[float]) -> dict:
    step_s = statistics.median(times)
    loss = float(carry["metrics"]["loss"])
    trained = trainable.count(carry["state"].trainable)
    return {"compile_s": compile_s, "step_s": step_s, "step_times_s": times,
            "tokens_per_s": tokens_per_example(row) * row.batch / step_s, "flops": flops,
            "flops_source": flops_source, "xla_memory_bytes": memory_bytes(compiled),
            "peak_memory_bytes": device_peak_bytes(), "loss": loss, "finite_loss": bool(np.isfinite(loss)),
            "trainable_params": trained, "total_params": trained + trainable.count(frozen)}

  return one_step, finish
