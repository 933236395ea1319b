"""End-to-end training throughput on real data: our input pipeline + step against a transformers + PEFT loop.

  python -m prompt_tuning_jax.bench --end_to_end [--tasks sst2,rte] [--methods lora,prompt_tuning,full_finetuning]

Each row (task x method) runs four loops on the real all-MiniLM-L6-v2, taking turns step by step (timing.py):
  ours           train/data.py's batches from the task's train split (seqio, the default length buckets) and
                 train/train_step.py's step, the model and trainable mask from the method's gin file;
  ours_padded    the same with every batch padded to the feature length (`buckets=None`, before this mode);
  hf_dynamic     transformers' BertForSequenceClassification wrapped by peft (peft_side.wrap), batches drawn at
                 random and padded to their longest example by DataCollatorWithPadding (HF Trainer's default);
  hf_grouped     the same with HF Trainer's group_by_length order (transformers' LengthGroupedSampler).
Same weights, batch size, AdamW (lr 1e-4, weight decay 0.01), dropout 0.1; torch in float32 with a thread per
core. The HF loops read the token ids our task produces (the same WordPiece ids), tokenized once beforehand as
a Trainer user's `dataset.map` would; collation is timed. Every loop's time counts from asking for the batch
to the finished step (ours reads its loss back).

Reported per loop: examples/s and real tokens/s over all steps (compiles included: what a user waits for),
the same over the steady steps (ours: without the first step of each batch shape; HF: without step 1),
padding share (padded positions / all positions), compiles (distinct batch shapes), mean real length.
"""
import os
import statistics
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from prompt_tuning_jax.bench import grid, peft_side

TASKS = {"sst2": ("bert_glue_sst2", 64), "rte": ("bert_glue_rte", 256)}  # name -> (task, max input length)
METHOD_FILES = {"lora": "methods/lora.gin", "prompt_tuning": "methods/prompt_tuning.gin",
                "full_finetuning": "methods/full_finetuning.gin"}
LOOPS = ("ours", "ours_padded", "hf_dynamic", "hf_grouped")
LEARNING_RATE, WEIGHT_DECAY, PROMPT_LENGTH, SEED = 1e-4, 0.01, 20, 0


class Loop:
  """One side's training loop around `step_fn` (one step -> its batch, numpy, models/inputs.py names).

  Attributes:
    compiles: whether each new batch shape compiles (jax) or not (torch eager).
  """

  def __init__(self, step_fn: Callable[[], dict], compiles: bool):
    self.step_fn, self.compiles, self.times, self.batches = step_fn, compiles, [], []

  def step(self) -> None:
    start = time.perf_counter()
    batch = self.step_fn()
    self.times.append(time.perf_counter() - start)
    self.batches.append({"shape": tuple(np.shape(batch["input_ids"])),
                         "real": int(np.asarray(batch["attention_mask"]).sum())})

  def result(self, batch_size: int) -> dict[str, Any]:
    shapes, first_of_shape = set(), []
    for b in self.batches:
      first_of_shape.append(b["shape"] not in shapes and self.compiles)
      shapes.add(b["shape"])
    steady = [i for i, first in enumerate(first_of_shape) if not first and i > 0]
    total_s, steady_s = sum(self.times), sum(self.times[i] for i in steady)
    real = sum(b["real"] for b in self.batches)
    positions = sum(int(np.prod(b["shape"])) for b in self.batches)
    return {"steps": len(self.times), "total_s": total_s, "examples_per_s": batch_size * len(self.times) / total_s,
            "real_tokens_per_s": real / total_s,
            "steady_examples_per_s": batch_size * len(steady) / steady_s if steady else None,
            "steady_real_tokens_per_s": sum(self.batches[i]["real"] for i in steady) / steady_s if steady else None,
            "median_step_s": statistics.median(self.times), "padding_share": 1 - real / positions,
            "compiles": len(shapes) if self.compiles else 0, "mean_real_length": real / (batch_size * len(self.batches)),
            "step_times_s": [round(t, 4) for t in self.times], "widths": [b["shape"][1] for b in self.batches]}


def _ours(task: str, length: int, method: str, batch_size: int, buckets: Any) -> Loop:
  """Our loop: gin-built model and mask (models/minilm.gin + the method's file), the real pipeline."""
  import jax  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax import gin_utils, minilm, runs  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.peft import trainable  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.train import data, optimizers, train_step, trainer  # pylint: disable=import-outside-toplevel
  gin_utils.parse_gin(["models/minilm.gin", METHOD_FILES[method]], [f"PROMPT_LENGTH = {PROMPT_LENGTH}"]
                      if method == "prompt_tuning" else [])
  model = gin_utils.configured_macro("MODEL")
  params = runs.prepare_params(trainer.initial_params(model, SEED, minilm.minilm_dir()), seed=SEED)
  optimizer = optimizers.build_optimizer(optimizers.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY))
  mask = gin_utils.configured(trainable.trainable_mask)(params)
  state, frozen = train_step.init_train_state(params, mask, optimizer)
  del params
  step_fn = train_step.make_train_step(train_step.loss_fn_for(model), optimizer)
  batches = data.task_train_data(task, {"input_ids": length}, seed=SEED, buckets=buckets)(batch_size, 0)
  rng, holder = jax.random.key(SEED + 1), {"state": state}

  def step() -> dict:
    batch = next(batches)
    holder["state"], metrics = step_fn(holder["state"], frozen, batch, rng)
    float(metrics["loss"])  # waits for the step
    return batch
  return Loop(step, compiles=True)


def _hf_examples(task: str, length: int) -> list[dict[str, Any]]:
  """The task's train split as token-id lists (our WordPiece ids, truncated as ours) with their labels."""
  from tasks import registry  # pylint: disable=import-outside-toplevel
  return [{"input_ids": ex["input_ids"].tolist(), "token_type_ids": ex["token_type_ids"].tolist(),
           "attention_mask": ex["attention_mask"].tolist(), "labels": int(ex["labels"])}
          for ex in registry.task_dataset(task, "train", {"input_ids": length}).as_numpy_iterator()]


def _hf(examples: list[dict], method: str, batch_size: int, grouped: bool, model_dir: str) -> Loop:
  """A transformers + peft loop over `examples`: random batches, or HF Trainer's length-grouped order."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from transformers import trainer_pt_utils  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(SEED)
  hf = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
  row = grid.Row("minilm", method, batch_size, 0, 0, prompt_length=PROMPT_LENGTH)
  model = peft_side.wrap(hf, row, None)
  model.train()
  parameters = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
  collate = transformers.DataCollatorWithPadding(transformers.AutoTokenizer.from_pretrained(model_dir))
  generator = torch.Generator().manual_seed(SEED)
  if grouped:
    order = list(trainer_pt_utils.LengthGroupedSampler(
        batch_size, lengths=[len(ex["input_ids"]) for ex in examples], generator=generator))
  else:
    order = torch.randperm(len(examples), generator=generator).tolist()
  position = {"next": 0}

  def step() -> dict:
    start = position["next"] % (len(order) - batch_size + 1)
    position["next"] = start + batch_size
    batch = collate([examples[i] for i in order[start:start + batch_size]])
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {k: v.numpy() for k, v in batch.items() if k in ("input_ids", "attention_mask")}
  return Loop(step, compiles=False)


def run_row(task: str, method: str, batch_size: int, steps: int, loops: Sequence[str] = LOOPS,
            examples: Optional[list] = None) -> dict[str, Any]:
  """One task x method: the loops of `loops` in turns for `steps` steps -> {'task', 'method', ..., loop: result}."""
  from prompt_tuning_jax import minilm  # pylint: disable=import-outside-toplevel
  from tasks import buckets as buckets_lib  # pylint: disable=import-outside-toplevel
  task_name, length = TASKS[task]
  builders = {
      "ours": lambda: _ours(task_name, length, method, batch_size, buckets_lib.LengthBuckets()),
      "ours_padded": lambda: _ours(task_name, length, method, batch_size, None),
      "hf_dynamic": lambda: _hf(examples, method, batch_size, False, minilm.minilm_dir()),
      "hf_grouped": lambda: _hf(examples, method, batch_size, True, minilm.minilm_dir())}
  running = {name: builders[name]() for name in loops}
  for _ in range(steps):
    for loop in running.values():
      loop.step()
  result = {"task": task_name, "method": method, "batch_size": batch_size, "max_length": length, "steps": steps,
            "load_average": ", ".join(f"{x:.2f}" for x in os.getloadavg())}
  result.update({name: loop.result(batch_size) for name, loop in running.items()})
  for name in ("hf_dynamic", "hf_grouped"):
    if "ours" in result and name in result:
      result[f"ratio_vs_{name}"] = {k: result["ours"][k] / result[name][k] for k in (
          "examples_per_s", "steady_examples_per_s") if result["ours"][k] and result[name][k]}
  return result


def run(tasks: Sequence[str], methods: Sequence[str], batch_size: int, steps: dict[str, int],
        loops: Sequence[str] = LOOPS) -> list[dict[str, Any]]:
  """Every task x method row; progress to stderr."""
  import sys  # pylint: disable=import-outside-toplevel
  import tasks as _  # pylint: disable=import-outside-toplevel,unused-import  (registers the tasks)
  rows = []
  for task in tasks:
    examples = _hf_examples(*TASKS[task]) if any(name.startswith("hf") for name in loops) else None
    for method in methods:
      row = run_row(task, method, batch_size, steps[task], loops, examples)
      rows.append(row)
      print(f"[end_to_end] {task} {method}: " + ", ".join(
          f"{name} {row[name]['examples_per_s']:.1f} ex/s" for name in loops), file=sys.stderr, flush=True)
  return rows


def markdown(rows: list[dict[str, Any]]) -> str:
  """The rows as a markdown table (one line per task x method x loop)."""
  lines = ["| task (max len) | method | loop | examples/s | real tokens/s | steady examples/s | padding share"
           " | compiles | mean real length | ours / this (all, steady) | load avg |", "|" + "---|" * 11]
  for row in rows:
    for name in LOOPS:
      if name not in row:
        continue
      r, ratio = row[name], row.get(f"ratio_vs_{name}", {})
      steady = f"{r['steady_examples_per_s']:.1f}" if r["steady_examples_per_s"] else "n/a"
      vs = (f"{ratio.get('examples_per_s', 0):.2f}x, {ratio.get('steady_examples_per_s', 0):.2f}x"
            if ratio else "")
      lines.append(f"| {row['task']} ({row['max_length']}) | {row['method']} | {name} | {r['examples_per_s']:.1f} | "
                   f"{r['real_tokens_per_s']:.0f} | {steady} | {r['padding_share']:.0%} | {r['compiles']} | "
                   f"{r['mean_real_length']:.1f} | {vs} | {row['load_average']} |")
  return "\n".join(lines) + "\n"
