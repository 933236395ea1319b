"""Runs notebooks top to bottom in their real (non-tiny) setting; the figures land in docs/figures/.

  python scripts/run_notebook.py notebooks/prompt_length_init.ipynb [more.ipynb ...] \
      [--setting=cpu|full] [--out_dir=runs/notebooks/<setting>] [--executed_dir=runs/notebooks/executed] \
      [--tasks=bert_super_glue_cb,...] [--seeds=0,1,2]

Sets PTJ_NOTEBOOK_TINY=0, PTJ_NOTEBOOK_SETTING, PTJ_NOTEBOOK_OUT and (with --tasks / --seeds)
PTJ_NOTEBOOK_TASKS / PTJ_NOTEBOOK_SEEDS (notebooks/notebook_setup.py) for the kernel, which is this interpreter.
The notebooks in notebooks/ stay without outputs; each executed copy, outputs and all, is written to
--executed_dir. Runs that finished in --out_dir are reused (prompt_tuning_jax/experiments/training.py).
"""
import argparse
import os
import sys

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("notebooks", nargs="+")
  parser.add_argument("--setting", default="cpu", help="a prompt_tuning_jax/experiments/config.py setting")
  parser.add_argument("--out_dir", help="default: runs/notebooks/<setting>")
  parser.add_argument("--executed_dir", default=os.path.join(REPO, "runs", "notebooks", "executed"))
  parser.add_argument("--timeout", type=int, default=6 * 3600, help="seconds per cell")
  parser.add_argument("--tasks", help="comma-separated tasks replacing the notebooks' tasks (and ensemble tasks)")
  parser.add_argument("--seeds", help="comma-separated seeds replacing the setting's seeds")
  args = parser.parse_args(argv)
  for flag, variable in (("tasks", "PTJ_NOTEBOOK_TASKS"), ("seeds", "PTJ_NOTEBOOK_SEEDS")):
    if getattr(args, flag):
      os.environ[variable] = getattr(args, flag)
  os.environ.update(PTJ_NOTEBOOK_TINY="0", PTJ_NOTEBOOK_SETTING=args.setting,
                    PTJ_NOTEBOOK_OUT=os.path.abspath(args.out_dir or os.path.join(REPO, "runs", "notebooks",
                                                                                   args.setting)))
  # the 'python3' kernelspec runs `python` from PATH: make that this interpreter
  os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
  os.makedirs(args.executed_dir, exist_ok=True)
  for path in args.notebooks:
    notebook = nbformat.read(path, as_version=4)
    print(f"running {path} (setting {args.setting}, runs in {os.environ['PTJ_NOTEBOOK_OUT']})", flush=True)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=args.timeout,
                                     resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    try:
      client.execute()
    finally:
      executed = os.path.join(args.executed_dir, os.path.basename(path))
      nbformat.write(notebook, executed)
      print(f"executed copy: {executed}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
