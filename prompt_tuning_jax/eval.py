"""python -m prompt_tuning_jax.eval --gin_file=<model> --gin_file=<method> --gin_file=runs/eval.gin ...

Scores a trained run (or a prompt ensemble of several runs) on a split: runs.evaluate.
"""
import sys

from prompt_tuning_jax import cli, runs

if __name__ == "__main__":
  sys.exit(cli.main(sys.argv[1:], runs.evaluate, "python -m prompt_tuning_jax.eval --gin_file=<model gin> "
                    "--gin_file=<method gin> --gin_file=runs/eval.gin --gin.CHECKPOINT_DIRS=\"['<model dir>']\" ..."))
