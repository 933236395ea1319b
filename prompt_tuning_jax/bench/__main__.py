"""Command line of the benchmark; see prompt_tuning_jax/bench/__init__.py for what it measures."""
import os

# NOTE: before jax starts: without this, jax takes 75% of GPU memory up front and torch (the PEFT side,
# same process) runs out of memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # pylint: disable=wrong-import-position
import itertools  # pylint: disable=wrong-import-position
import shlex  # pylint: disable=wrong-import-position
import sys  # pylint: disable=wrong-import-position
from typing import Optional, Sequence  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position

from prompt_tuning_jax.bench import grid, report, runner  # pylint: disable=wrong-import-position


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]


def _names(text: str) -> list[str]:
  return [x for x in text.split(",") if x]


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m prompt_tuning_jax.bench", description=__doc__)
  p.add_argument("--grid", choices=sorted(grid.ISSUE_GRIDS), help="the issue's rows (then --models/--methods filter)")
  p.add_argument("--models", type=_names, help=f"comma list of {grid.MODELS}")
  p.add_argument("--methods", type=_names, help=f"comma list of {sorted(grid.METHODS)}")
  p.add_argument("--batch", type=_ints, help="comma list (default 8; --end_to_end: its first entry, default 32)")
  p.add_argument("--input_length", type=_ints, default=[128], help="comma list")
  p.add_argument("--target_length", type=_ints, default=[8], help="comma list (T5 only; BERT predicts a label)")
  p.add_argument("--prompt_length", type=_ints, default=[100], help="comma list (prompt methods)")
  p.add_argument("--lora_rank", type=int, default=8)
  p.add_argument("--lora_alpha", type=float, default=16.0)
  p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
  p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                 help="activations; auto = bfloat16 on GPU/TPU, float32 on CPU")
  p.add_argument("--frozen_dtype", choices=("auto", "none", "float32", "bfloat16"), default="auto",
                 help="cast frozen kernels/tables once; auto = the activation dtype when it is not float32")
  p.add_argument("--scan_layers", action="store_true", help="T5: scan over layers (with remat)")
  p.add_argument("--dropout", type=float, default=0.0, help="dropout rate on both sides (0 = off)")
  p.add_argument("--ensemble", type=int, default=0, metavar="K", help="also run the K-prompt ensemble mode")
  p.add_argument("--no_flop_ratio", action="store_true", help="skip the prompt tuning / full FT FLOP ratio")
  p.add_argument("--flops_only", action="store_true",
                 help="only the FLOP ratios of the grid's prompt tuning rows (nothing runs: any size fits a CPU)")
  p.add_argument("--no_peft", action="store_true", help="skip the HF PEFT side")
  p.add_argument("--out_dir", default="bench_results")
  p.add_argument("--end_to_end", action="store_true",
                 help="real data through the input pipeline and step vs transformers + PEFT loops (end_to_end.py); "
                      "takes --tasks, --methods (default lora,prompt_tuning,full_finetuning), --batch, --examples")
  p.add_argument("--tasks", type=_names, default=["sst2", "rte"], help="--end_to_end: comma list of sst2, rte")
  p.add_argument("--examples", type=_ints, default=[2048, 512],
                 help="--end_to_end: training examples per loop, per task (comma list in --tasks order)")
  return p


def end_to_end_main(args: argparse.Namespace, command: str) -> int:
  """--end_to_end: the rows of end_to_end.py -> out_dir/end_to_end.json, end_to_end.md, command.txt."""
  from prompt_tuning_jax.bench import end_to_end  # pylint: disable=g-import-not-at-top
  methods = args.methods or ["lora", "prompt_tuning", "full_finetuning"]
  unknown = sorted(set(args.tasks) - set(end_to_end.TASKS)) + sorted(set(methods) - set(end_to_end.METHOD_FILES))
  if unknown or len(args.examples) < len(args.tasks):
    print(f"error: --end_to_end: unknown {unknown} (tasks {sorted(end_to_end.TASKS)}, methods "
          f"{sorted(end_to_end.METHOD_FILES)}), or fewer --examples than --tasks", file=sys.stderr)
    return 2
  batch = (args.batch or [32])[0]
  steps = {task: max(1, n // batch) for task, n in zip(args.tasks, args.examples)}
  rows = end_to_end.run(args.tasks, methods, batch, steps)
  result = {"command": command, "versions": {"jax": jax.__version__, **end_to_end.peft_side.versions()},
            "cpu_count": os.cpu_count(), "rows": rows}
  table = end_to_end.markdown(rows)
  paths = report.write_files(args.out_dir, "end_to_end", result, f"`{command}`\n\n{table}", command)
  print(table)
  print(f"wrote {', '.join(paths.values())}", file=sys.stderr)
  return 0


def rows_from(args: argparse.Namespace) -> list[grid.Row]:
  """The grid: an issue preset (filtered) or the product of the list flags; unknown names are errors."""
  for flag, names, known in (("--models", args.models, grid.MODELS), ("--methods", args.methods, grid.METHODS)):
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
      raise ValueError(f"{flag}: unknown {unknown}; known: {sorted(known)}")
  if args.grid:
    return [r for r in grid.ISSUE_GRIDS[args.grid]
            if (not args.models or r.model in args.models) and (not args.methods or r.method in args.methods)]
  if not args.models or not args.methods:
    raise ValueError("give --grid, or both --models and --methods")
  rows = []
  for model, method, batch, length, target, prompt in itertools.product(
      args.models, args.methods, args.batch or [8], args.input_length, args.target_length, args.prompt_length):
    target = target if model.startswith(("t5", "mt5")) else 0
    row = grid.Row(model, method, batch, length, target, prompt, args.lora_rank, args.lora_alpha)
    if row not in rows:
      rows.append(row)
  return rows


def options_from(args: argparse.Namespace) -> grid.Options:
  dtype = args.dtype
  if dtype == "auto":
    dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  frozen = {"auto": None if dtype == "float32" else dtype, "none": None}.get(args.frozen_dtype, args.frozen_dtype)
  return grid.Options(dtype=dtype, frozen_dtype=frozen, scan_layers=args.scan_layers, dropout=args.dropout,
                      steps=args.steps, warmup=args.warmup, peft=not args.no_peft)


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parser().parse_args(argv)
  try:
    rows = [] if args.end_to_end else rows_from(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  command = shlex.join(["python", "-m", "prompt_tuning_jax.bench", *argv])
  if args.end_to_end:
    return end_to_end_main(args, command)
  result = runner.run(rows, options_from(args), command, flop_ratios=not args.no_flop_ratio,
                      num_prompts=args.ensemble, flops_only=args.flops_only)
  paths = report.write(result, args.out_dir)
  print(open(paths["bench.md"]).read())
  print(f"wrote {', '.join(paths.values())}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
