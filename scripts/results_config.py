"""What scripts/results.py runs: the tasks, the methods (gin/results/*.gin) and the settings smoke | cpu | full.

Learning rates and schedules live in the gin/results/<method>.gin files (each cites METHODS.md); a setting only
cuts the budget (tasks, methods, seeds, steps, batch, lengths) and may scale every learning rate (`lr_scale`).
"""
import dataclasses
from typing import Optional

BOOLQ = "bert_super_glue_boolq"
BOOLQ_TRAIN_ROWS = 2000
"""BoolQ has no train split in the shared data: train on val.jsonl rows [0, 2000), evaluate on the rest."""


@dataclasses.dataclass(frozen=True)
class Task:
  """One task of the table.

  Attributes:
    name: the registered task (tasks.task_names()); BoolQ runs as a val-split variant (results_tasks.py).
    label: the column title.
    metrics: eval metric keys shown in the table, main first (the JSON keeps every metric).
    length: input_ids length of the full setting.
    train_steps: steps of the full setting at batch 32 (about 3 epochs of SST-2, 20-60 of the small sets).
    single_sentence: PASTA then uses 2 special-token vectors ([CLS], [SEP]), as the paper.
  """
  name: str
  label: str
  metrics: tuple[str, ...]
  length: int
  train_steps: int
  single_sentence: bool = False


TASKS = {task.name: task for task in [
    Task("bert_glue_sst2", "SST-2", ("accuracy",), 128, 6000, single_sentence=True),
    Task("bert_glue_rte", "RTE", ("accuracy",), 128, 2000),
    Task("bert_glue_mrpc", "MRPC", ("f1", "accuracy"), 128, 2000),
    Task("bert_super_glue_cb", "CB", ("mean_3class_f1", "accuracy"), 128, 500),
    Task(BOOLQ, "BoolQ*", ("accuracy",), 256, 1500),
]}


@dataclasses.dataclass(frozen=True)
class Method:
  """One method: its gin/results file and extra bindings on single-sentence tasks."""
  label: str
  gin_file: str
  single_sentence_bindings: tuple[str, ...] = ()


METHODS = {
    "full_finetuning": Method("full fine-tuning", "results/full_finetuning.gin"),
    "bitfit": Method("BitFit", "results/bitfit.gin"),
    "prompt_tuning_random": Method("prompt tuning, random init", "results/prompt_tuning_random.gin"),
    "prompt_tuning_vocab": Method("prompt tuning, sampled vocab", "results/prompt_tuning_vocab.gin"),
    "prompt_tuning_class_label": Method("prompt tuning, class labels", "results/prompt_tuning_class_label.gin"),
    "gpc": Method("prompt tuning + GPC (reconstructed)", "results/gpc.gin"),
    "fl_tuning": Method("FL-tuning (k=160)", "results/fl_tuning.gin"),
    "pasta": Method("PASTA", "results/pasta.gin", ("NUM_SPECIAL_TOKENS = 2",)),
    "sequential_adapter": Method("sequential adapter (r=200)", "results/sequential_adapter.gin"),
    "parallel_adapter": Method("parallel adapter (r=200)", "results/parallel_adapter.gin"),
    "scaled_parallel_adapter": Method("scaled parallel adapter (r=512, s=4)", "results/scaled_parallel_adapter.gin"),
    "lora": Method("LoRA (r=8, q/v)", "results/lora.gin"),
    "prefix_tuning": Method("prefix tuning (l=30, MLP)", "results/prefix_tuning.gin"),
    "mam": Method("MAM (l=16, r=16, s=2)", "results/mam.gin"),
}


@dataclasses.dataclass(frozen=True)
class Setting:
  """A budget for the table and for --ensembles.

  Attributes:
    tasks / methods / seeds: what runs (seeds: `runs.train.seed`).
    train_steps: None = each task's full-setting steps. batch_size, max_length: the cap on `Task.length`.
    lr_scale: multiplies LEARNING_RATE and PROMPT_LEARNING_RATE of the method files.
    eval_period: 0 = evaluate once at the end. eval_max_examples: None = the whole dev set.
    ensemble_tasks / ensemble_prompts / ensemble_method: the --ensembles mode (K prompts per task).
    backbone_bindings: extra gin bindings (a tiny random BERT for the notebooks' tiny runs);
      use_minilm: False = no INITIAL_CHECKPOINT_PATH (seeded random base; tiny runs only).
  """
  tasks: tuple[str, ...]
  methods: tuple[str, ...]
  seeds: tuple[int, ...]
  train_steps: Optional[int]
  batch_size: int
  max_length: int
  lr_scale: float = 1.0
  eval_period: int = 0
  eval_max_examples: Optional[int] = None
  ensemble_tasks: tuple[str, ...] = ("bert_glue_sst2", "bert_glue_rte")
  ensemble_prompts: int = 5
  ensemble_method: str = "prompt_tuning_class_label"
  backbone_bindings: tuple[str, ...] = ()
  use_minilm: bool = True

  def steps(self, task: str) -> int:
    return self.train_steps or TASKS[task].train_steps

  def length(self, task: str) -> int:
    return min(TASKS[task].length, self.max_length)


SETTINGS = {
    # CI: one small task, three methods of different kinds, a few steps (< 2 min on 2 CPU cores).
    "smoke": Setting(tasks=("bert_super_glue_cb",), methods=("bitfit", "lora", "prompt_tuning_random"), seeds=(0,),
                     train_steps=3, batch_size=4, max_length=32, ensemble_tasks=("bert_super_glue_cb",),
                     ensemble_prompts=2),
    # 2 CPU cores in about an hour: SST-2 and RTE, every method, one seed, 100 steps of 16 at length 64. The
    # method files' learning rates are tuned for 10+ epochs; 100 steps is < 1 epoch, so every rate is x10 (as
    # gin/runs/demo.gin does for LoRA).
    "cpu": Setting(tasks=("bert_glue_sst2", "bert_glue_rte"), methods=tuple(METHODS), seeds=(0,), train_steps=100,
                   batch_size=16, max_length=64, lr_scale=10.0, ensemble_prompts=5),
    # The real table (an accelerator): every task and method, 3 seeds, the tasks' steps at batch 32.
    "full": Setting(tasks=tuple(TASKS), methods=tuple(METHODS), seeds=(0, 1, 2), train_steps=None, batch_size=32,
                    max_length=512, eval_period=500),
}
