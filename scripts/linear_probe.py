"""Linear probes on the frozen MiniLM-L6: how much of a task its features hold before any tuning.

  python scripts/linear_probe.py --tasks=bert_glue_sst2,bert_glue_rte --train_examples=1600 --out_dir=runs/probe

For each task, the frozen backbone (the same checkpoint and input length as scripts/results.py's runs) reads
the first `--train_examples` training examples and the whole dev set, and three feature kinds are probed:
  pooler   the pooler output tanh(W h_[CLS] + b): what BertForSequenceClassification's head reads,
  cls      the last layer's [CLS] row,
  mean     the last layer averaged over the non-padding rows (how sentence-transformers trained this model).
Each probe is a softmax regression on standardised features (Adam, `--probe_steps` full-batch steps, L2
`--l2`), fitted on the train rows only. Then the *budget head*: the classifier of the results table's runs
(raw pooler features, N(0, 0.02) init, AdamW with linear decay to 0, `--head_steps` steps of `--head_batch`
shuffled train rows) at each of `--head_lrs`: what a head-only method can reach with the table's budget when the
backbone does not move. Writes probe.json (every accuracy and the settings), probe.md and command.txt into
--out_dir.

It answers one question for docs/RESULTS.md: when a head-only or prompt method stays at the majority class,
is that because the features the head reads do not separate the classes? The probes and the budget head:
prompt_tuning_jax/experiments/linear_probe.py.
"""
import argparse
import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from prompt_tuning_jax.experiments import linear_probe  # pylint: disable=wrong-import-position


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tasks", default="bert_glue_sst2,bert_glue_rte", help="comma-separated BERT tasks")
  parser.add_argument("--train_examples", type=int, default=1600, help="the first N training examples")
  parser.add_argument("--eval_examples", type=int, default=None, help="the first N dev examples (default all)")
  parser.add_argument("--length", type=int, default=64, help="input_ids length (results.py's cpu setting: 64)")
  parser.add_argument("--probe_steps", type=int, default=500)
  parser.add_argument("--l2", type=float, default=1e-3)
  parser.add_argument("--head_steps", type=int, default=100, help="budget head: steps (cpu setting: 100)")
  parser.add_argument("--head_batch", type=int, default=16, help="budget head: batch (cpu setting: 16)")
  parser.add_argument("--head_lrs", default="1e-3,1e-2,1e-1", help="budget head: peak learning rates")
  parser.add_argument("--out_dir", required=True)
  return parser.parse_args(argv)


def main(argv: list[str]) -> int:
  return linear_probe.run(parse_args(argv), shlex.join(["python", "scripts/linear_probe.py", *argv]))


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
