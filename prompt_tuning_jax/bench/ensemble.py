"""Ensemble mode: K prompts in one pass vs a plain pass over K·B examples (forward / eval cost).

The ensemble model holds a bank of K prompts (peft/prompts.py `num_prompts`); B examples are each
repeated K times and `prompt_index` [K·B] = tile(arange(K), B) gives copy k prompt k, so one forward
scores every example under every prompt. The plain pass is the single-prompt model over K·B distinct
examples, the cost of evaluating the same number of rows without an ensemble; the base model without any
prompt over K·B examples is reported beside it. Both return logits for their K·B rows (combining the K
predictions of an example is a reduction outside the pass). Layers are never scanned here, so XLA's cost
analysis counts every layer.
"""
import dataclasses
import statistics
import time
from typing import Callable

import flax.linen as nn
import jax
import numpy as np

from prompt_tuning_jax.bench import grid, ours, timing
from prompt_tuning_jax.models import t5
from prompt_tuning_jax.train import cost


def forward_fn(model: nn.Module):
  """(params, batch) -> logits: T5 [rows, t, vocab] (teacher-forced), BERT [rows, num_labels]."""
  if isinstance(model, t5.T5):
    return lambda params, batch: model.apply({"params": params}, batch["encoder_input_tokens"],
                                             batch["decoder_input_tokens"], prompt_index=batch.get("prompt_index"))
  return lambda params, batch: model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                                           batch["token_type_ids"], prompt_index=batch.get("prompt_index"))


def ensemble_batch(batch: dict[str, np.ndarray], num_prompts: int) -> dict[str, np.ndarray]:
  """B examples -> K·B rows (each example K times in a row) with prompt_index tile(arange(K), B)."""
  rows = {k: np.repeat(v, num_prompts, axis=0) for k, v in batch.items()}
  examples = next(iter(batch.values())).shape[0]
  rows["prompt_index"] = np.tile(np.arange(num_prompts, dtype=np.int32), examples)
  return rows


def _prepare(row: grid.Row, options: grid.Options, examples: int, num_prompts: int = 0
             ) -> tuple[Callable[[], None], dict]:
  """Compiles one forward of `row`'s model over `examples` examples (num_prompts > 0: the K-prompt
  ensemble over K·examples rows) -> (blocking call, {'rows', 'compile_s', 'flops'})."""
  model = ours.build_model(dataclasses.replace(row, num_prompts=max(num_prompts, 1)), options, scan_layers=False)
  params = ours.cast_frozen(ours.random_params(model), options.frozen_dtype)
  batch = ours.make_batch(model, dataclasses.replace(row, batch=examples))
  batch = jax.device_put(ensemble_batch(batch, num_prompts) if num_prompts else batch)
  start = time.perf_counter()
  compiled = jax.jit(forward_fn(model)).lower(params, batch).compile()
  compile_s = time.perf_counter() - start
  info = {"rows": int(next(iter(batch.values())).shape[0]), "compile_s": compile_s,
          "flops": cost.flops(compiled)}
  return lambda: jax.block_until_ready(compiled(params, batch)), info


def run_ensemble(row: grid.Row, options: grid.Options, num_prompts: int) -> dict:
  """K = num_prompts prompts over B = row.batch // K examples in one pass, vs plain passes over K·B examples.

  The three passes are timed in turns (timing.py). Returns them and the ratios ensemble / plain (the
  issue's target: at most 1.1x) and ensemble / no prompt (informational).
  """
  examples = max(row.batch // num_prompts, 1)
  plain_rows = examples * num_prompts
  passes = {"ensemble": _prepare(row, options, examples, num_prompts),
            "plain": _prepare(row, options, plain_rows),
            "no_prompt": _prepare(dataclasses.replace(row, method="full_finetuning"), options, plain_rows)}
  times, errors = timing.interleaved({name: call for name, (call, _) in passes.items()}, options.warmup,
                                     options.steps)
  if errors:
    raise RuntimeError(f"ensemble mode on {row.model}: {errors}")
  out = {name: {**info, "step_s": statistics.median(times[name])} for name, (_, info) in passes.items()}
  ratio = lambda key, other: out["ensemble"][key] / out[other][key] if out[other][key] else None
  return {"model": row.model, "num_prompts": num_prompts, "examples": examples, "rows": plain_rows,
          "input_length": row.input_length, "target_length": row.target_length,
          "prompt_length": row.prompt_length, **out,
          "flop_ratio": ratio("flops", "plain"), "time_ratio": ratio("step_s", "plain"),
          "flop_ratio_vs_no_prompt": ratio("flops", "no_prompt"),
          "time_ratio_vs_no_prompt": ratio("step_s", "no_prompt")}
