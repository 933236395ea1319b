"""The work of scripts/results.py: a setting cut by its flags, the plan of runs, training them, the outputs.

  setting = results.setting_from("sweep")
  plan = results.make_plan(setting, sweep=True)          # one Run per task x method x learning rate x seed
  results.run(args, command)                             # what the script does with its flags (`args`)

Every run's MODEL_DIR is <out_dir>/<task>/<method>/seed_<n> (training.Run.directory); a run whose result.json
exists is skipped (training.train); --report_only tabulates the finished runs only (training.finished). With
--ledger=FILE, finished runs are also recorded in FILE (experiments/ledger.py) and a run FILE records is finished
without its out_dir: the table outlives the machine that trained it.
"""
import argparse
import dataclasses
import os
from typing import Optional

from prompt_tuning_jax.experiments import config, ledger  # neither imports jax


def choose(value: Optional[str], default: tuple, known: Optional[dict], what: str) -> tuple:
  """The comma-separated `value` of a flag (None or empty: `default`); each must be in `known` (None: any)."""
  if not value:
    return default
  chosen = tuple(value.split(","))
  unknown = [c for c in chosen if known is not None and c not in known]
  if unknown:
    raise SystemExit(f"error: unknown {what} {unknown}; known: {', '.join(known)}")
  return chosen


def setting_from(name: str, *, tasks: Optional[str] = None, methods: Optional[str] = None,
                 seeds: Optional[str] = None, train_steps: Optional[int] = None,
                 ensembles: bool = False) -> config.Setting:
  """config.SETTINGS[name] cut by the flags (comma-separated tasks / methods / seeds, steps); with `ensembles`,
  `tasks` also replaces the ensemble tasks."""
  base = config.SETTINGS[name]
  replace = {"tasks": choose(tasks, base.tasks, config.TASKS, "tasks"),
             "methods": choose(methods, base.methods, config.METHODS, "methods"),
             "seeds": tuple(int(s) for s in choose(seeds, base.seeds, None, "seeds"))}
  if ensembles and tasks:
    replace["ensemble_tasks"] = replace["tasks"]
  if train_steps:
    replace["train_steps"] = train_steps
  return dataclasses.replace(base, **replace)


def make_plan(setting: config.Setting, *, sweep: bool = False, heads: bool = False, methods: Optional[str] = None,
              variants: Optional[str] = None) -> list:
  """The runs of the table (task x method x seed), of `sweep` (x each method's learning rates) or of `heads`
  (HEAD_METHODS, or the comma-separated `methods`, x the head `variants`, default all)."""
  from prompt_tuning_jax.experiments import training  # pylint: disable=g-import-not-at-top  (imports jax, seqio)
  Run = training.Run
  if heads:
    methods = choose(methods, config.HEAD_METHODS, config.METHODS, "methods")
    variants = choose(variants, tuple(config.HEAD_VARIANTS), config.HEAD_VARIANTS, "variants")
    return [Run(t, m, s, variant=v) for t in setting.tasks for m in methods for v in variants for s in setting.seeds]
  if sweep:
    return [Run(t, m, s, learning_rate=lr) for t in setting.tasks for m in setting.methods
            for lr in config.METHODS[m].sweep for s in setting.seeds]
  return [Run(t, m, s) for t in setting.tasks for m in setting.methods for s in setting.seeds]


def train_plan(plan: list, setting: config.Setting, out_dir: str, book: Optional[ledger.Ledger] = None) -> list[dict]:
  """Trains each run of `plan` in order (training.train: finished ones are skipped) and returns their results; a run
  that another live process is training (training.RunInUse) is left to it and missing from the list, so two
  processes running the same command share its runs."""
  from prompt_tuning_jax.experiments import training  # pylint: disable=g-import-not-at-top  (imports jax, seqio)
  results = []
  for run_ in plan:
    try:
      results.append(training.train(run_, setting, out_dir, book=book))
    except training.RunInUse as error:
      print(f"busy {run_.directory}: {error}", flush=True)
  return results


def run(args: argparse.Namespace, command: str) -> int:
  """scripts/results.py with its parsed flags `args`: writes command.txt, then the table (results.json/.md),
  the sweep (sweep.json/.md), the head comparison (heads.json/.md) or the ensembles (ensembles.json/.md) into
  args.out_dir and prints the markdown; --into splices the table's blocks into a markdown file (report.splice);
  --dry_run lists the runs instead."""
  if args.into and (args.ensembles or args.sweep or args.heads):
    raise ValueError(f"--into={args.into} takes the table's blocks; --ensembles, --sweep and --heads have none")
  setting = setting_from(args.setting, tasks=args.tasks, methods=args.methods, seeds=args.seeds,
                         train_steps=args.train_steps, ensembles=args.ensembles)
  os.makedirs(args.out_dir, exist_ok=True)
  with open(os.path.join(args.out_dir, "command.txt"), "a") as f:
    f.write(command + "\n")
  import jax  # pylint: disable=g-import-not-at-top
  # runs of one method share their train and eval steps (seeds, repeated commands): compile each once
  jax.config.update("jax_compilation_cache_dir", os.path.join(args.out_dir, ".jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  # pylint: disable=g-import-not-at-top  (these import jax, tensorflow)
  from prompt_tuning_jax.experiments import prompt_ensembles, report, training
  from prompt_tuning_jax.train import outputs
  # pylint: enable=g-import-not-at-top
  if args.ensembles:
    if args.dry_run:
      print("\n".join(f"ensemble {t}: head + {setting.ensemble_prompts} prompts" for t in setting.ensemble_tasks))
      return 0
    reports = [prompt_ensembles.run_task(t, setting, args.out_dir) for t in setting.ensemble_tasks]
    outputs.write_json(os.path.join(args.out_dir, "ensembles.json"),
                       {**report.payload(command, args.setting, setting, []), "ensembles": reports})
    text = report.ensemble_markdown(command, reports)
    path = os.path.join(args.out_dir, "ensembles.md")
  else:
    plan = make_plan(setting, sweep=args.sweep, heads=args.heads, methods=args.methods, variants=args.variants)
    if args.dry_run:
      print("\n".join(run.directory for run in plan))
      return 0
    book = ledger.Ledger(args.ledger) if args.ledger else None
    if args.report_only:
      results = [r for r in (training.finished(run, setting, args.out_dir, book) for run in plan) if r is not None]
      print(f"report only: {len(results)} of {len(plan)} runs finished"
            + (f" ({args.ledger}: {len(book)} runs recorded)" if book is not None else ""), flush=True)
    else:
      results = train_plan(plan, setting, args.out_dir, book)
    name = "sweep" if args.sweep else "heads" if args.heads else "results"
    outputs.write_json(os.path.join(args.out_dir, f"{name}.json"),
                       report.payload(command, args.setting, setting, results))
    parts = report.blocks(setting, results) if name == "results" else None
    text = (report.sweep_markdown(command, results) if parts is None else
            report.markdown(command, args.setting, setting, results, parts))
    path = os.path.join(args.out_dir, f"{name}.md")
    if args.into and parts is not None:
      with open(args.into) as f:
        doc = report.splice(f.read(), parts, args.into, args.marker)
      outputs.write_text(args.into, doc)
  with open(path, "w") as f:
    f.write(text)
  print(text)
  return 0
