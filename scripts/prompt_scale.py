"""Prompt rows against text rows on the real MiniLM-L6: the scale of each prompt init, and GPC's cell by depth.

  python scripts/prompt_scale.py --examples=32 --out=runs/prompt_scale.json

(a) the seam: token rows against each prompt init's rows, before and after drawing from the seam table;
(b) GPC: the prompt and text rows entering each encoder layer, for old / new inits and gate bounds.
What is measured, exactly: prompt_tuning_jax/experiments/prompt_scale.py. Prints both tables and writes them as
JSON to --out.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from prompt_tuning_jax.experiments import prompt_scale  # pylint: disable=wrong-import-position


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--examples", type=int, default=32, help="the first N SST-2 dev examples")
  parser.add_argument("--length", type=int, default=64, help="input_ids length")
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", required=True, help="JSON file to write")
  return parser.parse_args(argv)


def main(argv: list[str]) -> int:
  return prompt_scale.run(parse_args(argv), " ".join(["python", "scripts/prompt_scale.py"] + argv))


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
