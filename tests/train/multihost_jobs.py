"""Runs a list of train / eval command lines one after the other in one job: `python multihost_jobs.py JOBS.json`.

JOBS.json holds [[entry, [argv ...]], ...] with entry 'train' or 'eval'; each runs as `python -m
prompt_tuning_jax.<entry> argv` would (cli.main), in this process. Under `python -m prompt_tuning_jax.launch` the
processes join one JAX job once and run every command together, so tests/train/test_multihost.py pays the
start-up (imports, distributed init) once per job instead of once per command. Exits with the first failure.
"""
import json
import sys

from prompt_tuning_jax import cli, runs

ENTRIES = {"train": runs.train, "eval": runs.evaluate}


def main(path: str) -> int:
  with open(path, encoding="utf-8") as f:
    jobs = json.load(f)
  for entry, argv in jobs:
    status = cli.main(argv, ENTRIES[entry], f"multihost_jobs.py {entry}")
    if status:
      return status
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1]))
