"""Runs a grid: each row on both sides (timed in turns), the FLOP ratios, the ensembles; one result dict.

A side that fails (an unsupported PEFT setup, out of memory) records its error and the run goes on.
"""
import dataclasses
import os
import sys
from typing import Optional

import jax

from prompt_tuning_jax.bench import ensemble, grid, hardware, ours, peft_side, targets, timing


def _load() -> str:
  return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run_one(row: grid.Row, options: grid.Options, device: dict, peft_reason: Optional[str]) -> dict:
  """One grid row, both sides timed in turns: {'row', 'options', 'load_average', 'ours', 'peft',
  'peft_skipped', 'ratio', 'prompt_rows'}."""
  before = _load()
  sides, mine, theirs, skipped = {}, {}, None, peft_reason
  try:
    sides["ours"] = ours.prepare(row, options)
  except Exception as e:  # pylint: disable=broad-except
    mine = {"error": timing.error_text(e)}
  if skipped is None and grid.METHODS[row.method].peft is None:
    skipped = "no PEFT counterpart"
  if skipped is None:
    try:
      model = ours.build_model(row, options)
      sides["peft"] = peft_side.prepare(row, options, model.config, ours.make_batch(model, row))
    except Exception as e:  # pylint: disable=broad-except
      skipped = "error: " + timing.error_text(e)
  times, errors = timing.interleaved({name: step for name, (step, _) in sides.items()}, options.warmup,
                                     options.steps)
  if "ours" in sides:
    mine = {"error": errors["ours"]} if "ours" in errors else sides["ours"][1](times["ours"])
  if "peft" in sides:
    if "peft" in errors:
      skipped = "error: " + errors["peft"]
    else:
      theirs = sides["peft"][1](times["peft"])
  del sides
  if "step_s" in mine:
    mine["mfu"] = mine["flops"] / mine["step_s"] / device["peak_flops"] if device["peak_flops"] else None
  ratio = {}
  if theirs and "step_s" in mine:
    ratio["tokens_per_s"] = mine["tokens_per_s"] / theirs["tokens_per_s"]
    if theirs["peak_memory_bytes"] and mine.get("xla_memory_bytes"):
      ratio["memory"] = mine["xla_memory_bytes"] / theirs["peak_memory_bytes"]
  return {"row": dataclasses.asdict(row), "options": dataclasses.asdict(options),
          "load_average": {"before": before, "after": _load()}, "ours": mine, "peft": theirs,
          "peft_skipped": skipped, "ratio": ratio, "prompt_rows": row.method in grid.PROMPT_METHODS}


def flop_ratio(row: grid.Row, options: grid.Options) -> dict:
  """Prompt tuning vs full fine-tuning FLOPs per step (unscanned lowerings; nothing runs).

  'same_shapes': against every weight of the prompt model training (the encoder sees the same P + L rows);
  'vs_no_prompt': against the full fine-tuning row, whose encoder sees L rows.
  """
  flops = {m: ours.step_flops(dataclasses.replace(row, method=m), options)
           for m in ("prompt_tuning", "full_finetuning_with_prompt", "full_finetuning")}
  return {"model": row.model, "batch": row.batch, "input_length": row.input_length,
          "target_length": row.target_length, "prompt_length": row.prompt_length,
          "prompt_tuning": flops["prompt_tuning"], "full_finetuning_same_shapes": flops["full_finetuning_with_prompt"],
          "full_finetuning_no_prompt": flops["full_finetuning"],
          "same_shapes": flops["prompt_tuning"] / flops["full_finetuning_with_prompt"],
          "vs_no_prompt": flops["prompt_tuning"] / flops["full_finetuning"]}


def run(rows: list[grid.Row], options: grid.Options, command: str, flop_ratios: bool = True,
        num_prompts: int = 0, flops_only: bool = False) -> dict:
  """The whole run as report.py's result dict; progress goes to stderr.

  flops_only: only the FLOP ratios (abstract lowerings: any size runs on a CPU), no timed rows or ensembles.
  """
  device = hardware.device_info()
  peft_reason = "not run (--no_peft)" if not options.peft else peft_side.unavailable()
  versions = {"jax": jax.__version__}
  if peft_reason is None:
    versions.update(peft_side.versions())
  result = {"command": command, "device": device, "versions": versions, "options": dataclasses.asdict(options),
            "uptime_start": hardware.uptime(), "rows": [], "flop_ratios": [], "ensembles": [],
            "peak_table": dict(hardware.PEAK_BF16_TFLOPS), "errors": []}
  for row in [] if flops_only else rows:
    entry = run_one(row, options, device, peft_reason)
    result["rows"].append(entry)
    print(f"[bench] {row.model} {row.method} b={row.batch} {row.input_length}+{row.target_length}: "
          f"ours {entry['ours'].get('step_s', entry['ours'].get('error'))} s, "
          f"peft {(entry['peft'] or {}).get('step_s', entry['peft_skipped'])} s, load {entry['load_average']}",
          file=sys.stderr, flush=True)
  prompt_rows = [r for r in rows if r.method == "prompt_tuning"]
  for row in prompt_rows if flop_ratios else []:
    result["flop_ratios"].append(flop_ratio(row, options))
  for row in prompt_rows if num_prompts and not flops_only else []:
    try:
      result["ensembles"].append({**ensemble.run_ensemble(row, options, num_prompts), "load_average": _load()})
    except Exception as e:  # pylint: disable=broad-except
      result["errors"].append(f"ensemble {row.model}: {timing.error_text(e)}")
  result["uptime_end"] = hardware.uptime()
  result["targets"] = targets.evaluate(result)
  return result
