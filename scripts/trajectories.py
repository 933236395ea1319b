"""Training trajectories, ours against HF PEFT or plain PyTorch: same weights, batches, AdamW and schedule.

  python scripts/trajectories.py --out trajectories.json [--steps 10 --batch 8 --length 64] [--float64_reference]

Trains the real MiniLM-L6 on the first `--steps` SST-2 training batches with LoRA, BitFit, full fine-tuning
and prefix tuning, once with our train step and once with transformers (+ peft), and prints and writes per
method: steps, the max relative loss, parameter and update differences. How the two sides train and what the
metrics mean: prompt_tuning_jax/experiments/trajectories.py.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from prompt_tuning_jax.experiments import trajectories  # pylint: disable=wrong-import-position


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out", required=True, help="JSON file for the table")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=64)
  parser.add_argument("--methods", default=",".join(trajectories.MINILM_METHODS),
                      help="comma-separated, from MINILM_METHODS")
  parser.add_argument("--float64_reference", action="store_true",
                      help="also run the torch side in float64: how far each float32 side is from exact arithmetic")
  args = parser.parse_args(argv)
  unknown = sorted(set(args.methods.split(",")) - set(trajectories.MINILM_METHODS))
  if unknown:
    parser.error(f"--methods has unknown {unknown}; known: {sorted(trajectories.MINILM_METHODS)}")
  return trajectories.run(args, " ".join(["python", "scripts/trajectories.py", *argv]))


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
