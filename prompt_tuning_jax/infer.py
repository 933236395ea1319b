"""python -m prompt_tuning_jax.infer --gin_file=<model> --gin_file=<method> --gin_file=runs/infer.gin ...

Writes a trained run's predictions on a split: runs.infer.
"""
import sys

from prompt_tuning_jax import cli, runs

if __name__ == "__main__":
  sys.exit(cli.main(sys.argv[1:], runs.infer, "python -m prompt_tuning_jax.infer --gin_file=<model gin> "
                    "--gin_file=<method gin> --gin_file=runs/infer.gin --gin.CHECKPOINT_DIR=\"'<model dir>'\" ..."))
