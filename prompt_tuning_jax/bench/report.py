"""Writes a run's results: bench.json (everything), bench.md (tables) and command.txt (the exact command).

bench.json: {'command', 'device', 'versions', 'options', 'uptime_start', 'uptime_end', 'rows',
'flop_ratios', 'ensembles', 'targets', 'peak_table', 'errors' (of whole modes)}; each row {'row', 'options', 'load_average',
'ours', 'peft' (or None), 'peft_skipped', 'ratio', 'prompt_rows'} (ours.prepare, peft_side.prepare).
"""
import json
import os
from typing import Any, Optional

SCHEMA_KEYS = ("command", "device", "versions", "options", "uptime_start", "uptime_end", "rows", "flop_ratios",
               "ensembles", "targets", "peak_table", "errors")
ROW_KEYS = ("row", "options", "load_average", "ours", "peft", "peft_skipped", "ratio", "prompt_rows")
OURS_KEYS = ("compile_s", "step_s", "tokens_per_s", "flops", "mfu", "xla_memory_bytes", "peak_memory_bytes")


def _num(value: Optional[float], fmt: str = "{:.3g}") -> str:
  return "n/a" if value is None else fmt.format(value)


def _gib(value: Optional[float]) -> str:
  return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def _shape(row: dict) -> str:
  target = f"+{row['target_length']}" if row["target_length"] else ""
  return f"{row['batch']} x {row['input_length']}{target}"


def rows_table(rows: list[dict]) -> list[str]:
  lines = ["| model | method | batch x tokens | P | compile s | step s | tokens/s | GFLOP/step | MFU | memory (XLA)"
           " | PEFT step s | PEFT tokens/s | PEFT memory | speed ours/PEFT | memory ours/PEFT | load avg |",
           "|" + "---|" * 16]
  for entry in rows:
    row, ours, peft, ratio = entry["row"], entry["ours"] or {}, entry["peft"] or {}, entry["ratio"]
    prompt = row["prompt_length"] if entry["prompt_rows"] else "-"
    if "error" in ours:
      lines.append(f"| {row['model']} | {row['method']} | {_shape(row)} | {prompt} | error: {ours['error']} |"
                   + " |" * 11)
      continue
    peft_cells = (f"{_num(peft.get('step_s'))} | {_num(peft.get('tokens_per_s'), '{:,.0f}')} | "
                  f"{_gib(peft.get('peak_memory_bytes'))}") if peft else f"{entry['peft_skipped']} | | "
    lines.append(
        f"| {row['model']} | {row['method']} | {_shape(row)} | {prompt} | {_num(ours.get('compile_s'), '{:.1f}')} | "
        f"{_num(ours.get('step_s'))} | {_num(ours.get('tokens_per_s'), '{:,.0f}')} | "
        f"{_num(ours.get('flops') / 1e9, '{:,.1f}')} | {_num(ours.get('mfu'), '{:.1%}')} | "
        f"{_gib(ours.get('xla_memory_bytes'))} | {peft_cells} | {_num(ratio.get('tokens_per_s'), '{:.2f}x')} | "
        f"{_num(ratio.get('memory'), '{:.2f}x')} | {entry['load_average']['before']} |")
  return lines


def flop_table(entries: list[dict]) -> list[str]:
  lines = ["| model | batch x tokens | P | prompt tuning GFLOP | full FT, same shapes | ratio | "
           "full FT, no prompt | ratio |", "|" + "---|" * 8]
  for e in entries:
    lines.append(f"| {e['model']} | {_shape(e)} | {e['prompt_length']} | {e['prompt_tuning'] / 1e9:,.1f} | "
                 f"{e['full_finetuning_same_shapes'] / 1e9:,.1f} | {e['same_shapes']:.3f} | "
                 f"{e['full_finetuning_no_prompt'] / 1e9:,.1f} | {e['vs_no_prompt']:.3f} |")
  return lines


def ensemble_table(entries: list[dict]) -> list[str]:
  lines = ["| model | K | examples -> rows | tokens | ensemble s | plain s | no-prompt s | FLOP ratio | time ratio | "
           "FLOP / time vs no prompt |", "|" + "---|" * 10]
  for e in entries:
    tokens = f"{e['input_length']}+{e['target_length']}" if e["target_length"] else str(e["input_length"])
    lines.append(f"| {e['model']} | {e['num_prompts']} | {e['examples']} -> {e['rows']} | {tokens} (P={e['prompt_length']}) | "
                 f"{e['ensemble']['step_s']:.3g} | {e['plain']['step_s']:.3g} | {e['no_prompt']['step_s']:.3g} | "
                 f"{e['flop_ratio']:.3f} | {e['time_ratio']:.3f} | {e['flop_ratio_vs_no_prompt']:.3f} / "
                 f"{e['time_ratio_vs_no_prompt']:.3f} |")
  return lines


def targets_table(targets: list[dict]) -> list[str]:
  lines = ["| target | threshold | measured | status | note |", "|---|---|---|---|---|"]
  for t in targets:
    lines.append(f"| {t['target']} | {t['threshold']} | {_num(t['measured'], '{:.3f}')} | {t['status']} | {t['note']} |")
  return lines


def markdown(result: dict) -> str:
  device = result["device"]
  lines = [f"Command: `{result['command']}`", "",
           f"Device: {device['platform']} ({device['device_kind']}, {device['cpu_count']} CPUs); peak "
           f"{_num(device['peak_flops'] and device['peak_flops'] / 1e12, '{:.3g}')} TFLOP/s per device "
           f"({device['peak_source']}). Versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}.",
           f"Load: start `{result['uptime_start']}`; end `{result['uptime_end']}`.", ""]
  if result["rows"]:
    lines += rows_table(result["rows"]) + [""]
  if result["flop_ratios"]:
    lines += flop_table(result["flop_ratios"]) + [""]
  if result["ensembles"]:
    lines += ensemble_table(result["ensembles"]) + [""]
  lines += [f"Error: {e}" for e in result["errors"]] + ([""] if result["errors"] else [])
  return "\n".join(lines + targets_table(result["targets"])) + "\n"


def write_files(out_dir: str, stem: str, result: dict[str, Any], text: str, command: str) -> dict[str, str]:
  """out_dir/{stem}.json (result), {stem}.md (text) and command.txt -> their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {name: os.path.join(out_dir, name) for name in (f"{stem}.json", f"{stem}.md", "command.txt")}
  for name, content in ((f"{stem}.json", json.dumps(result, indent=1)), (f"{stem}.md", text),
                        ("command.txt", command + "\n")):
    with open(paths[name], "w") as f:
      f.write(content)
  return paths


def write(result: dict[str, Any], out_dir: str) -> dict[str, str]:
  """Writes bench.json, bench.md and command.txt into out_dir (created) -> their paths."""
  return write_files(out_dir, "bench", result, markdown(result), result["command"])
