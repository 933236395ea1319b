"""What scripts/results.py runs: the tasks, the methods (gin/results/*.gin) and the settings smoke | cpu | full.

Learning rates and schedules live in the gin/results/<method>.gin files (each cites METHODS.md and the sweep that
chose it); a setting only cuts the budget (tasks, methods, seeds, steps, batch, lengths). The `sweep` setting trains
each method at each of its `Method.sweep` learning rates on a holdout carved from the train split
(task_variants.py), never on the dev set the table reports.
"""
import dataclasses
from typing import Optional, Union

BOOLQ = "bert_super_glue_boolq"
BOOLQ_TRAIN_ROWS = 2000
"""BoolQ has no train split in the shared data: train on val.jsonl rows [0, 2000), evaluate on the rest."""


@dataclasses.dataclass(frozen=True)
class Task:
  """One task of the table.

  Attributes:
    name: the registered task (tasks.task_names()); BoolQ runs as a val-split variant (task_variants.py).
    label: the column title.
    metrics: eval metric keys shown in the table, main first (the JSON keeps every metric).
    length: input_ids length of the full setting.
    train_steps: steps of the full setting at batch 32 (about 3 epochs of SST-2, 20-60 of the small sets).
    cpu_steps: steps of the `cpu` setting at batch 32 (the table on 2 CPU cores).
    holdout_fraction: the share of train rows held out as the sweeps' validation set.
    single_sentence: PASTA then uses 2 special-token vectors ([CLS], [SEP]), as the paper.
  """
  name: str
  label: str
  metrics: tuple[str, ...]
  length: int
  train_steps: int
  cpu_steps: int
  holdout_fraction: float
  single_sentence: bool = False


TASKS = {task.name: task for task in [
    # cpu_steps at batch 32: SST-2 0.24 epochs (16,000 of 67,349 rows), RTE 3.2, MRPC 2.2, CB 12.8, BoolQ* 2.4;
    # sized so every method x task (3 seeds on SST-2 and CB) fits an estimated 8 hours of this machine's 2 cores
    # (extrapolated from the sweeps' step times; docs/RESULTS.md §5).
    Task("bert_glue_sst2", "SST-2", ("accuracy",), 128, 6000, 500, 1 / 64, single_sentence=True),
    Task("bert_glue_rte", "RTE", ("accuracy",), 128, 2000, 250, 0.1),
    Task("bert_glue_mrpc", "MRPC", ("f1", "accuracy"), 128, 2000, 250, 0.1),
    Task("bert_super_glue_cb", "CB", ("mean_3class_f1", "accuracy"), 128, 500, 100, 0.2),
    Task(BOOLQ, "BoolQ*", ("accuracy",), 256, 1500, 150, 0.1),
]}


# 3e-3: with 400 steps 1e-3 was the top edge for every adapter-like method that finished first (LoRA, the
# sequential and parallel adapters); MAM (1e-3 = 3e-4) and PASTA keep their own.
ADAPTER_SWEEP = (1e-4, 3e-4, 1e-3, 3e-3)


@dataclasses.dataclass(frozen=True)
class Method:
  """One method: its gin/results file, extra bindings on single-sentence tasks, and its learning-rate sweep.

  Attributes:
    sweep: the values of `sweep_macro` the `sweep` setting tries (around the paper's; METHODS.md §(5)); empty =
      the method takes `sweep_from`'s value.
    sweep_macro: the method's own learning rate: LEARNING_RATE, or PROMPT_LEARNING_RATE for the prompt's.
    sweep_from: the method whose sweep chooses this one's rate (the same optimizer and parameters, another init).
  """
  label: str
  gin_file: str
  single_sentence_bindings: tuple[str, ...] = ()
  sweep: tuple[float, ...] = ADAPTER_SWEEP
  sweep_macro: str = "LEARNING_RATE"
  sweep_from: Optional[str] = None


# 1e-1: 3e-2 was the top edge for the random init; P-tuning v2's prompt rates reach 1e-1 (METHODS.md §C(5)).
PROMPT_SWEEP = dict(sweep=(3e-3, 1e-2, 3e-2, 1e-1), sweep_macro="PROMPT_LEARNING_RATE")
# Methods swept after the first adapter-like ones: 1e-4 was the worst value of LoRA, both adapters and BitFit at
# 400 steps, so their sweeps start at 3e-4 (three values, not four, on 2 CPU cores).
LATE_SWEEP = (3e-4, 1e-3, 3e-3)
METHODS = {
    # 2e-4: 1e-4 was the best of the first three (the top edge), so the sweep goes one step further; 5e-4: so did
    # 2e-4 (RESULTS.md §4).
    "full_finetuning": Method("full fine-tuning", "results/full_finetuning.gin",
                              sweep=(2e-5, 5e-5, 1e-4, 2e-4, 5e-4)),
    # 1e-3, then 3e-3 were the top edge: one more step each time.
    "bitfit": Method("BitFit", "results/bitfit.gin", sweep=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),
    "prompt_tuning_random": Method("prompt tuning, random init", "results/prompt_tuning_random.gin", **PROMPT_SWEEP),
    # The other two inits train the same P x d prompt with the same optimizer from rows at the same scale
    # (prompt_init.py): they take the random init's swept rate rather than two more sweeps of 2 CPU cores.
    "prompt_tuning_vocab": Method("prompt tuning, sampled vocab", "results/prompt_tuning_vocab.gin", sweep=(),
                                  sweep_macro="PROMPT_LEARNING_RATE", sweep_from="prompt_tuning_random"),
    "prompt_tuning_class_label": Method("prompt tuning, class labels", "results/prompt_tuning_class_label.gin",
                                        sweep=(), sweep_macro="PROMPT_LEARNING_RATE",
                                        sweep_from="prompt_tuning_random"),
    "gpc": Method("prompt tuning + GPC (reconstructed)", "results/gpc.gin", **PROMPT_SWEEP),
    "fl_tuning": Method("FL-tuning (k=160)", "results/fl_tuning.gin", sweep=LATE_SWEEP),
    # 1e-2: 3e-3 was the top edge of the first three (85.04 against 83.73 at 1e-3), so one step further; 3e-2: so
    # was 1e-2 (RESULTS.md §4).
    "pasta": Method("PASTA", "results/pasta.gin", ("NUM_SPECIAL_TOKENS = 2",),
                    sweep=(2.5e-4, 1e-3, 3e-3, 1e-2, 3e-2)),
    "sequential_adapter": Method("sequential adapter (r=200)", "results/sequential_adapter.gin"),
    "parallel_adapter": Method("parallel adapter (r=200)", "results/parallel_adapter.gin"),
    # 1e-4: 3e-4, the lowest of LATE_SWEEP, was the best (the bottom edge), so one step further down.
    "scaled_parallel_adapter": Method("scaled parallel adapter (r=512, s=4)", "results/scaled_parallel_adapter.gin",
                                      sweep=(1e-4,) + LATE_SWEEP),
    # 1e-2: 3e-3 was the top edge (87.86 against 87.30 at 1e-3), so one step further.
    "lora": Method("LoRA (r=8, q/v)", "results/lora.gin", sweep=ADAPTER_SWEEP + (1e-2,)),
    "prefix_tuning": Method("prefix tuning (l=30, MLP)", "results/prefix_tuning.gin"),
    "mam": Method("MAM (l=16, r=16, s=2)", "results/mam.gin", sweep=(1e-4, 3e-4, 1e-3)),
}

HEAD_VARIANTS = {
    "pooler": ("POOLING = 'pooler'",),
    "pooler_lr1e-2": ("POOLING = 'pooler'", "HEAD_LEARNING_RATE = 1e-2"),
    "pooler_trained": ("POOLING = 'pooler'", "trainable.trainable_mask.extra_patterns = [r'(^|/)pooler/']"),
    "cls": ("POOLING = 'cls'",),
    "mean": ("POOLING = 'mean'",),
}
"""The head choices `--heads` compares (gin bindings after the method's; models/bert.py POOLINGS)."""
HEAD_METHODS = ("bitfit", "prompt_tuning_random", "lora")
"""One method per family for the head comparison: biases, input prompts, low-rank / adapter deltas."""


@dataclasses.dataclass(frozen=True)
class Setting:
  """A budget for the table and for --ensembles.

  Attributes:
    tasks / methods / seeds: what runs (seeds: `runs.train.seed`).
    train_steps: an int for every task, or 'full' / 'cpu' = each task's `train_steps` / `cpu_steps`.
    batch_size, max_length: the cap on `Task.length`.
    holdout: train on the train split minus the task's holdout and evaluate on the holdout (task_variants.py).
    eval_period: 0 = evaluate once at the end. eval_max_examples: None = the whole dev set.
    ensemble_tasks / ensemble_prompts / ensemble_method: the --ensembles mode (K prompts per task).
    backbone_bindings: extra gin bindings of every run (a tiny random BERT for the notebooks' tiny runs; the sweep's buckets);
      use_minilm: False = no INITIAL_CHECKPOINT_PATH (seeded random base; tiny runs only).
  """
  tasks: tuple[str, ...]
  methods: tuple[str, ...]
  seeds: tuple[int, ...]
  train_steps: Union[int, str]
  batch_size: int
  max_length: int
  holdout: bool = False
  eval_period: int = 0
  eval_max_examples: Optional[int] = None
  ensemble_tasks: tuple[str, ...] = ("bert_glue_sst2", "bert_super_glue_cb")
  ensemble_prompts: int = 5
  ensemble_method: str = "prompt_tuning_class_label"
  backbone_bindings: tuple[str, ...] = ()
  use_minilm: bool = True

  def steps(self, task: str) -> int:
    if isinstance(self.train_steps, int):
      return self.train_steps
    return {"full": TASKS[task].train_steps, "cpu": TASKS[task].cpu_steps}[self.train_steps]

  def length(self, task: str) -> int:
    return min(TASKS[task].length, self.max_length)


SETTINGS = {
    # CI: one small task, three methods of different kinds, a few steps (< 2 min on 2 CPU cores).
    "smoke": Setting(tasks=("bert_super_glue_cb",), methods=("bitfit", "lora", "prompt_tuning_random"), seeds=(0,),
                     train_steps=3, batch_size=4, max_length=32, ensemble_tasks=("bert_super_glue_cb",),
                     ensemble_prompts=2),
    # Learning-rate sweeps and the head comparison: SST-2's holdout (1/64 of train: 1,063 rows), 400 steps of 32.
    # Three length buckets (32, 64, 128) instead of the default ladder: fewer compiles per run (the batches hold
    # the same examples either way; tasks/buckets.py).
    "sweep": Setting(tasks=("bert_glue_sst2",), methods=tuple(METHODS), seeds=(0,), train_steps=400, batch_size=32,
                     max_length=128, holdout=True, backbone_bindings=("buckets.LengthBuckets.lengths = [32, 64]",)),
    # The table on 2 CPU cores: every task and method, each task's cpu_steps at batch 32 (Task's comment),
    # length-bucketed batches; seeds 0-2 for SST-2 and CB (--seeds).
    "cpu": Setting(tasks=tuple(TASKS), methods=tuple(METHODS), seeds=(0,), train_steps="cpu", batch_size=32,
                   max_length=256, ensemble_prompts=5),
    # The real table (an accelerator): every task and method, 3 seeds, the tasks' steps at batch 32.
    "full": Setting(tasks=tuple(TASKS), methods=tuple(METHODS), seeds=(0, 1, 2), train_steps="full", batch_size=32,
                    max_length=512, eval_period=500),
}
