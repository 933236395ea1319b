"""scripts/results.py --ensembles: K prompts per task that share one frozen classifier head, scored in one pass.

A BERT prompt run also trains the classifier head, and prompts can only be stacked into one bank when everything
else is identical (runs.evaluate checks it). So per task:
  1. head run: prompt + head trained together (the setting's method, seed 0): the results table's own run
     <task>/<method>/seed_0 (reused when the table already trained it);
  2. its MiniLM + trained head (pooler, classifier; the prompt dropped) exported as a HF directory
     (checkpoints.hf_bert.export_hf_bert) -> ensembles/<task>/head_checkpoint;
  3. K prompt runs with INITIAL_CHECKPOINT_PATH = that directory and only the prompt trainable
     (gin/results/prompt_only.gin), differing in runs.train.prompt_seed = data_seed = k -> ensembles/<task>/prompt_k;
  4. runs.evaluate(checkpoint_dirs=[the K dirs]) -> ensembles/<task>/eval: each prompt, their mean and best,
     majority vote and mean log-prob (evaluation/ensemble.py), predictions.jsonl with every prompt's scores.
"""
import itertools
import json
import os
import statistics
from typing import Any

import gin
import jax

from prompt_tuning_jax import gin_utils, runs
from prompt_tuning_jax.checkpoints import hf_bert
from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning_jax.experiments import config, training

PROMPT_ONLY = "results/prompt_only.gin"
POOLING = "results/pooling.gin"  # the head reads what it was trained on (results/run.gin includes it too)


def export_head(head_result: dict, out_dir: str, path: str) -> None:
  """The head run's full params minus the prompt -> a HF BERT + classifier directory at `path`."""
  gin_utils.parse_gin(head_result["gin_files"], head_result["gin_bindings"])
  model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  params, _ = runs.restore_params(model, os.path.join(out_dir, head_result["model_dir"]),
                                  gin.query_parameter("%INITIAL_CHECKPOINT_PATH"))
  base = {k: v for k, v in flatten_params(params).items() if "prompt" not in k.split("/")}
  hf_bert.export_hf_bert(jax.tree_util.tree_map(jax.device_get, unflatten_params(base)), model.config, path)


def evaluate(run: training.Run, setting: config.Setting, checkpoint_dirs: list[str], head_checkpoint: str,
             output_dir: str) -> dict[str, Any]:
  """runs.evaluate over the K prompt runs (one bank, one forward per batch)."""
  files = ["models/minilm.gin", config.METHODS[run.method].gin_file, PROMPT_ONLY, "runs/eval.gin", POOLING]
  bindings = training.model_bindings(run, setting, head_checkpoint) + [
      f"CHECKPOINT_DIRS = {checkpoint_dirs!r}", f"OUTPUT_DIR = '{output_dir}'", "BATCH_SIZE = 64",
      f"TRAIN_STEPS = {setting.steps(run.task)}",  # the method file's optimizer refers to it
      f"runs.evaluate.max_examples = {setting.eval_max_examples}"]
  gin_utils.parse_gin(files, bindings)
  return gin.get_configurable(runs.evaluate)()


def agreement(predictions_jsonl: str) -> dict[str, float]:
  """How much the K prompts differ on the evaluated examples (runs.evaluate's predictions.jsonl), in %:
  all_agree (every prompt predicts the same class), pairwise (mean over prompt pairs of the examples they agree
  on) and any_correct (some prompt is right: the ceiling of any vote over these prompts)."""
  with open(predictions_jsonl) as f:
    rows = [json.loads(line) for line in f]
  k = len(rows[0]["predictions"])
  def share(hits) -> float:
    return 100 * sum(hits) / len(rows)
  return {"all_agree": share(len(set(r["predictions"])) == 1 for r in rows),
          "pairwise": statistics.mean(share(r["predictions"][i] == r["predictions"][j] for r in rows)
                                      for i, j in itertools.combinations(range(k), 2)),
          "any_correct": share(r["target"] in r["predictions"] for r in rows)}


def run_task(task: str, setting: config.Setting, out_dir: str) -> dict[str, Any]:
  """Steps 1-4 of the module docstring for one task (finished steps are skipped); returns the report."""
  base = os.path.join("ensembles", task)
  run = training.Run(task, setting.ensemble_method, 0)
  head = training.train(run, setting, out_dir)
  head_checkpoint = os.path.abspath(os.path.join(out_dir, base, "head_checkpoint"))
  if not os.path.isfile(os.path.join(head_checkpoint, "config.json")):
    export_head(head, out_dir, head_checkpoint)
  prompts = [training.train(
      run, setting, out_dir, extra_files=[PROMPT_ONLY], initial_checkpoint=head_checkpoint,
      extra=[f"runs.train.prompt_seed = {k}", f"runs.train.data_seed = {k}"],
      directory=os.path.join(base, f"prompt_{k}")) for k in range(setting.ensemble_prompts)]
  output_dir = os.path.abspath(os.path.join(out_dir, base, "eval"))
  metrics_path = os.path.join(output_dir, "metrics.json")
  if os.path.isfile(metrics_path):
    metrics = training.read_json(metrics_path)
  else:
    metrics = evaluate(run, setting, [os.path.join(out_dir, p["model_dir"]) for p in prompts], head_checkpoint,
                       output_dir)
  predictions = os.path.join(base, "eval", "predictions.jsonl")
  return {"task": task, "method": run.method, "num_prompts": setting.ensemble_prompts,
          "head_metrics": head["metrics"], "metrics": metrics, "head_run": head, "prompt_runs": prompts,
          "predictions": predictions, "agreement": agreement(os.path.join(out_dir, predictions))}
