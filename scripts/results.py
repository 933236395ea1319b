"""Regenerates the method-comparison table of docs/RESULTS.md (issue 6) on the real MiniLM-L6, or the prompt ensembles.

  python scripts/results.py --setting=smoke --out_dir=/tmp/results_smoke          # CI, < 2 min
  python scripts/results.py --setting=cpu --out_dir=results_cpu                   # 2 CPU cores, hours (resumable)
  python scripts/results.py --setting=cpu --out_dir=runs/table --ledger=docs/results/table_cpu.jsonl  # recorded
  python scripts/results.py --setting=full --out_dir=results_full                 # the real table (accelerator)
  python scripts/results.py --setting=cpu --ensembles --out_dir=results_cpu       # 5 prompts x 2 tasks
  python scripts/results.py --setting=cpu --tasks=bert_glue_sst2 --methods=lora,bitfit --out_dir=...  # a subset
  python scripts/results.py --setting=cpu --report_only --out_dir=results_cpu     # the table of finished runs
  python scripts/results.py --setting=cpu --report_only --out_dir=results_cpu --into=docs/RESULTS.md  # ... into the page
  python scripts/results.py --setting=cpu --report_only --out_dir=runs/table --ledger=docs/results/table_cpu.jsonl \
      --into=docs/RESULTS.md                                                      # the page from the ledger
  python scripts/results.py --setting=sweep --sweep --out_dir=runs/sweep           # learning-rate sweeps (holdout)
  python scripts/results.py --setting=sweep --heads --out_dir=runs/sweep           # pooling / head comparison

Tasks, methods and settings: prompt_tuning_jax/experiments/config.py; per-method optimizers:
gin/results/<method>.gin; the runs, the report and the ensembles: prompt_tuning_jax/experiments/.
Every run's MODEL_DIR is <out_dir>/<task>/<method>/seed_<n>; a run whose result.json exists is skipped, so the
same command resumes after an interruption (an unfinished run resumes from its checkpoint); --report_only trains
nothing and tabulates the finished runs of the plan (an unfinished one shows as a dash). --ledger=FILE records each
finished run in FILE (committed: docs/results/table_cpu.jsonl holds the cpu table's) and counts the runs it records
as finished, so a new machine resumes the table where the last one stopped. A run that another live process is
training is left to it (running.pid), so the same command started twice trains its runs on two workers. Writes into out_dir:
results.json + results.md (or ensembles.json + ensembles.md) and command.txt (every command run there).
BoolQ trains on a fixed part of its validation file (experiments/task_variants.py); the outputs say so.
"""
import argparse
import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from prompt_tuning_jax.experiments import config, results  # pylint: disable=wrong-import-position


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--setting", choices=sorted(config.SETTINGS), default="smoke")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--tasks", help="comma-separated subset of the setting's tasks (or any of config.TASKS)")
  parser.add_argument("--methods", help="comma-separated subset of config.METHODS")
  parser.add_argument("--seeds", help="comma-separated seeds")
  parser.add_argument("--train_steps", type=int, help="override the setting's steps")
  parser.add_argument("--ensembles", action="store_true",
                      help="the prompt-ensemble mode (experiments/prompt_ensembles.py)")
  parser.add_argument("--sweep", action="store_true",
                      help="every method at each learning rate of its config.Method.sweep (sweep.json/.md)")
  parser.add_argument("--heads", action="store_true",
                      help="config.HEAD_METHODS x HEAD_VARIANTS at the method files' rates (heads.json/.md)")
  parser.add_argument("--variants", help="comma-separated subset of config.HEAD_VARIANTS (--heads)")
  parser.add_argument("--dry_run", action="store_true", help="list the runs and exit")
  parser.add_argument("--report_only", action="store_true",
                      help="train nothing: write results.json/.md from the plan's finished runs")
  parser.add_argument("--ledger", help="a .jsonl record of finished runs (docs/results/table_cpu.jsonl): each run "
                      "that finishes, or is found finished in out_dir, is added; a run it records is not trained "
                      "again and is reported without its out_dir (prompt_tuning_jax/experiments/ledger.py)")
  parser.add_argument("--into", help="a markdown file (docs/RESULTS.md): replace its '<!-- results:NAME -->' blocks "
                      "(table, targets, orderings, plateau, wall) with this report's")
  parser.add_argument("--marker", default="results",
                      help="--into's markers are '<!-- MARKER:NAME -->': another marker keeps a second report's "
                      "blocks on the same page")
  return parser.parse_args(argv)


def main(argv: list[str]) -> int:
  return results.run(parse_args(argv), shlex.join(["python", "scripts/results.py", *argv]))


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
