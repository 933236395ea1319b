"""python -m prompt_tuning_jax.train --gin_file=models/... --gin_file=methods/... --gin_file=runs/finetune.gin ..."""
import sys

from prompt_tuning_jax import cli, runs

if __name__ == "__main__":
  sys.exit(cli.main(sys.argv[1:], runs.train, "python -m prompt_tuning_jax.train --gin_file=<model gin> "
                    "--gin_file=<method gin> --gin_file=runs/finetune.gin --gin.MODEL_DIR=\"'<dir>'\" ..."))
