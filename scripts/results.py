"""Regenerates the method-comparison table of docs/RESULTS.md (issue 6) on the real MiniLM-L6, or the prompt ensembles.

  python scripts/results.py --setting=smoke --out_dir=/tmp/results_smoke          # CI, < 2 min
  python scripts/results.py --setting=cpu --out_dir=results_cpu                   # 2 CPU cores, hours (resumable)
  python scripts/results.py --setting=full --out_dir=results_full                 # the real table (accelerator)
  python scripts/results.py --setting=cpu --ensembles --out_dir=results_cpu       # 5 prompts x 2 tasks
  python scripts/results.py --setting=cpu --tasks=bert_glue_sst2 --methods=lora,bitfit --out_dir=...  # a subset
  python scripts/results.py --setting=cpu --report_only --out_dir=results_cpu     # the table of finished runs
  python scripts/results.py --setting=sweep --sweep --out_dir=runs/sweep           # learning-rate sweeps (holdout)
  python scripts/results.py --setting=sweep --heads --out_dir=runs/sweep           # pooling / head comparison

Tasks, methods and settings: scripts/results_config.py; per-method optimizers: gin/results/<method>.gin.
Every run's MODEL_DIR is <out_dir>/<task>/<method>/seed_<n>; a run whose result.json exists is skipped, so the
same command resumes after an interruption (an unfinished run resumes from its checkpoint); --report_only trains
nothing and tabulates the finished runs of the plan (an unfinished one shows as a dash). Writes into out_dir:
results.json + results.md (or ensembles.json + ensembles.md) and command.txt (every command run there).
BoolQ trains on a fixed part of its validation file (scripts/results_tasks.py); the outputs say so.
"""
import argparse
import dataclasses
import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import results_config as config  # pylint: disable=wrong-import-position


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--setting", choices=sorted(config.SETTINGS), default="smoke")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--tasks", help="comma-separated subset of the setting's tasks (or any of results_config.TASKS)")
  parser.add_argument("--methods", help="comma-separated subset of results_config.METHODS")
  parser.add_argument("--seeds", help="comma-separated seeds")
  parser.add_argument("--train_steps", type=int, help="override the setting's steps")
  parser.add_argument("--ensembles", action="store_true", help="the prompt-ensemble mode (results_ensembles.py)")
  parser.add_argument("--sweep", action="store_true",
                      help="every method at each learning rate of its results_config.Method.sweep (sweep.json/.md)")
  parser.add_argument("--heads", action="store_true",
                      help="results_config.HEAD_METHODS x HEAD_VARIANTS at the method files' rates (heads.json/.md)")
  parser.add_argument("--variants", help="comma-separated subset of results_config.HEAD_VARIANTS (--heads)")
  parser.add_argument("--dry_run", action="store_true", help="list the runs and exit")
  parser.add_argument("--report_only", action="store_true",
                      help="train nothing: write results.json/.md from the plan's finished runs")
  return parser.parse_args(argv)


def choose(value: str | None, default: tuple, known: dict | None, what: str) -> tuple:
  if not value:
    return default
  chosen = tuple(value.split(","))
  unknown = [c for c in chosen if known is not None and c not in known]
  if unknown:
    raise SystemExit(f"error: unknown {what} {unknown}; known: {', '.join(known)}")
  return chosen


def setting_from(args: argparse.Namespace) -> config.Setting:
  base = config.SETTINGS[args.setting]
  replace = {"tasks": choose(args.tasks, base.tasks, config.TASKS, "tasks"),
             "methods": choose(args.methods, base.methods, config.METHODS, "methods"),
             "seeds": tuple(int(s) for s in choose(args.seeds, base.seeds, None, "seeds"))}
  if args.ensembles and args.tasks:
    replace["ensemble_tasks"] = replace["tasks"]
  if args.train_steps:
    replace["train_steps"] = args.train_steps
  return dataclasses.replace(base, **replace)


def make_plan(args: argparse.Namespace, setting: config.Setting) -> list:
  """The runs of the table (task x method x seed), of --sweep (x each method's learning rates) or of --heads
  (HEAD_METHODS x head variants)."""
  import results_runs  # pylint: disable=g-import-not-at-top
  Run = results_runs.Run
  if args.heads:
    methods = choose(args.methods, config.HEAD_METHODS, config.METHODS, "methods")
    variants = choose(args.variants, tuple(config.HEAD_VARIANTS), config.HEAD_VARIANTS, "variants")
    return [Run(t, m, s, variant=v) for t in setting.tasks for m in methods for v in variants for s in setting.seeds]
  if args.sweep:
    return [Run(t, m, s, learning_rate=lr) for t in setting.tasks for m in setting.methods
            for lr in config.METHODS[m].sweep for s in setting.seeds]
  return [Run(t, m, s) for t in setting.tasks for m in setting.methods for s in setting.seeds]


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  setting = setting_from(args)
  command = shlex.join(["python", "scripts/results.py", *argv])
  os.makedirs(args.out_dir, exist_ok=True)
  with open(os.path.join(args.out_dir, "command.txt"), "a") as f:
    f.write(command + "\n")
  import jax  # pylint: disable=g-import-not-at-top
  # runs of one method share their train and eval steps (seeds, repeated commands): compile each once
  jax.config.update("jax_compilation_cache_dir", os.path.join(args.out_dir, ".jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  import results_report as report  # pylint: disable=g-import-not-at-top  (imports jax, tensorflow)
  import results_runs  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.train import outputs  # pylint: disable=g-import-not-at-top
  if args.ensembles:
    import results_ensembles  # pylint: disable=g-import-not-at-top
    if args.dry_run:
      print("\n".join(f"ensemble {t}: head + {setting.ensemble_prompts} prompts" for t in setting.ensemble_tasks))
      return 0
    reports = [results_ensembles.run_task(t, setting, args.out_dir) for t in setting.ensemble_tasks]
    outputs.write_json(os.path.join(args.out_dir, "ensembles.json"),
                       {**report.payload(command, args.setting, setting, []), "ensembles": reports})
    text = report.ensemble_markdown(command, reports)
    path = os.path.join(args.out_dir, "ensembles.md")
  else:
    plan = make_plan(args, setting)
    if args.dry_run:
      print("\n".join(run.directory for run in plan))
      return 0
    if args.report_only:
      results = [r for r in (results_runs.finished(run, args.out_dir) for run in plan) if r is not None]
      print(f"report only: {len(results)} of {len(plan)} runs finished", flush=True)
    else:
      results = [results_runs.train(run, setting, args.out_dir) for run in plan]
    name = "sweep" if args.sweep else "heads" if args.heads else "results"
    outputs.write_json(os.path.join(args.out_dir, f"{name}.json"), report.payload(command, args.setting, setting, results))
    text = (report.sweep_markdown(command, results) if name != "results" else
            report.markdown(command, args.setting, setting, results))
    path = os.path.join(args.out_dir, f"{name}.md")
  with open(path, "w") as f:
    f.write(text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
