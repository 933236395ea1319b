"""Linear probes on the frozen MiniLM-L6: how much of a task its features hold before any tuning.

  python scripts/linear_probe.py --tasks=bert_glue_sst2,bert_glue_rte --train_examples=1600 --out_dir=runs/probe

For each task, the frozen backbone (the same checkpoint and input length as scripts/results.py's runs) reads
the first `--train_examples` training examples and the whole dev set (BoolQ*: the table's split of val.jsonl,
training.task_name), and three feature kinds are probed:
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
is that because the features the head reads do not separate the classes?
"""
import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from prompt_tuning_jax.experiments import examples, training

FEATURES = ("pooler", "cls", "mean")


def features(model, params, data: dict[str, np.ndarray], batch_size: int = 64) -> dict[str, np.ndarray]:
  """{'pooler' | 'cls' | 'mean': [n, d]} of the frozen BertModel."""
  @jax.jit
  def encode(ids, types, mask):
    out = model.apply({"params": params}, ids, attention_mask=mask, token_type_ids=types)
    hidden = out.last_hidden_state  # [b, l, d]
    weights = mask[..., None].astype(hidden.dtype)
    mean = (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
    return {"pooler": out.pooler_output, "cls": hidden[:, 0], "mean": mean}
  n = len(data["labels"])
  parts = []
  for start in range(0, n, batch_size):
    chunk = {k: v[start:start + batch_size] for k, v in data.items()}
    pad = batch_size - len(chunk["labels"])  # one compiled shape: pad the last chunk, drop the pad rows
    args = [np.pad(chunk[k], ((0, pad), (0, 0))) for k in ("input_ids", "token_type_ids", "attention_mask")]
    parts.append({k: np.asarray(v)[:batch_size - pad] for k, v in encode(*args).items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in FEATURES}


def fit_probe(x: np.ndarray, y: np.ndarray, num_labels: int, steps: int, l2: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Softmax regression on standardised x [n, d] -> (weights [d, c], bias [c], feature mean [d], std [d])."""
  mean, std = x.mean(0), x.std(0) + 1e-6
  z = jnp.asarray((x - mean) / std)
  labels = jnp.asarray(y)
  theta = {"w": jnp.zeros((x.shape[1], num_labels)), "b": jnp.zeros((num_labels,))}
  optimizer = optax.adam(1e-2)

  def loss(theta):
    logits = z @ theta["w"] + theta["b"]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return nll + l2 * jnp.sum(theta["w"] ** 2)

  @jax.jit
  def step(theta, state):
    grads = jax.grad(loss)(theta)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(theta, updates), state

  state = optimizer.init(theta)
  for _ in range(steps):
    theta, state = step(theta, state)
  return np.asarray(theta["w"]), np.asarray(theta["b"]), mean, std


def budget_head(x: np.ndarray, y: np.ndarray, num_labels: int, steps: int, batch: int, learning_rate: float,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """The table runs' classifier on raw features x [n, d]: N(0, 0.02) weights, zero bias, AdamW (wd 0) with a
  linear decay from `learning_rate` to 0, `steps` minibatches of `batch` rows (reshuffled every epoch).
  Returns the probe tuple of `fit_probe` (mean 0, std 1: no standardising)."""
  rng = np.random.default_rng(seed)
  theta = {"w": jnp.asarray(rng.normal(0.0, 0.02, (x.shape[1], num_labels)), jnp.float32),
           "b": jnp.zeros((num_labels,))}
  optimizer = optax.adamw(optax.linear_schedule(learning_rate, 0.0, steps), weight_decay=0.0)

  @jax.jit
  def step(theta, state, xb, yb):
    loss = lambda t: optax.softmax_cross_entropy_with_integer_labels(xb @ t["w"] + t["b"], yb).mean()
    updates, state = optimizer.update(jax.grad(loss)(theta), state, theta)
    return optax.apply_updates(theta, updates), state

  state = optimizer.init(theta)
  order = np.concatenate([rng.permutation(len(y)) for _ in range(steps * batch // len(y) + 1)])
  for i in range(steps):
    rows = order[i * batch:(i + 1) * batch]
    theta, state = step(theta, state, jnp.asarray(x[rows]), jnp.asarray(y[rows]))
  zeros = np.zeros(x.shape[1], x.dtype)
  return np.asarray(theta["w"]), np.asarray(theta["b"]), zeros, zeros + 1.0


def accuracy(probe, x: np.ndarray, y: np.ndarray) -> float:
  w, b, mean, std = probe
  return float(100.0 * np.mean(np.argmax(((x - mean) / std) @ w + b, axis=-1) == y))


def probe_task(task: str, args: argparse.Namespace, model, params) -> dict:
  """Train/dev accuracy of each feature kind's probe, and the dev majority-class accuracy. `task` reads the
  splits the table's runs read (training.task_name: BoolQ* trains on val.jsonl's first rows, evaluates on the rest)."""
  from tasks import registry  # pylint: disable=g-import-not-at-top
  data_task = training.task_name(task)
  num_labels = len(registry.label_strings(data_task))
  train = examples.first_examples(data_task, "train", args.length, args.train_examples)
  dev = examples.first_examples(data_task, "validation", args.length, args.eval_examples)
  train_x, dev_x = features(model, params, train), features(model, params, dev)
  result = {"task": task, "train_examples": len(train["labels"]), "eval_examples": len(dev["labels"]),
            "majority": float(100.0 * np.bincount(dev["labels"], minlength=num_labels).max() / len(dev["labels"])),
            "train_accuracy": {}, "eval_accuracy": {}}
  for kind in FEATURES:
    probe = fit_probe(train_x[kind], train["labels"], num_labels, args.probe_steps, args.l2)
    result["train_accuracy"][kind] = accuracy(probe, train_x[kind], train["labels"])
    result["eval_accuracy"][kind] = accuracy(probe, dev_x[kind], dev["labels"])
  result["budget_head"] = {}
  for lr in args.head_lrs.split(","):
    head = budget_head(train_x["pooler"], train["labels"], num_labels, args.head_steps, args.head_batch, float(lr))
    result["budget_head"][lr] = {"train_accuracy": accuracy(head, train_x["pooler"], train["labels"]),
                                 "eval_accuracy": accuracy(head, dev_x["pooler"], dev["labels"])}
  return result


def markdown(command: str, results: list[dict]) -> str:
  lines = [f"Command: `{command}`", "", "| task | train examples | dev majority | " + " | ".join(
      f"{k} probe: dev (train)" for k in FEATURES) + " |", "|" + "---|" * (3 + len(FEATURES))]
  for r in results:
    cells = [f"{r['eval_accuracy'][k]:.2f} ({r['train_accuracy'][k]:.2f})" for k in FEATURES]
    lines.append(f"| {r['task']} | {r['train_examples']} | {r['majority']:.2f} | " + " | ".join(cells) + " |")
  lrs = list(results[0]["budget_head"])
  lines += ["", "Budget head (pooler features as the runs' classifier sees them): dev (train) accuracy per peak "
            "learning rate", "", "| task | " + " | ".join(f"lr {lr}" for lr in lrs) + " |", "|" + "---|" * (1 + len(lrs))]
  for r in results:
    cells = [f"{r['budget_head'][lr]['eval_accuracy']:.2f} ({r['budget_head'][lr]['train_accuracy']:.2f})"
             for lr in lrs]
    lines.append(f"| {r['task']} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, command: str) -> int:
  """scripts/linear_probe.py: probes every task of `args.tasks` (its flags) -> probe.json, probe.md and
  command.txt in `args.out_dir`; prints the markdown."""
  import tasks  # pylint: disable=g-import-not-at-top,unused-import  (registers every task)
  from prompt_tuning_jax import minilm  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import hf_bert  # pylint: disable=g-import-not-at-top
  model, params = hf_bert.load_hf_bert(minilm.minilm_dir())
  results = [probe_task(task, args, model, params) for task in args.tasks.split(",")]
  os.makedirs(args.out_dir, exist_ok=True)
  with open(os.path.join(args.out_dir, "command.txt"), "a") as f:
    f.write(command + "\n")
  with open(os.path.join(args.out_dir, "probe.json"), "w") as f:
    json.dump({"command": command, "settings": vars(args), "results": results}, f, indent=2)
  text = markdown(command, results)
  with open(os.path.join(args.out_dir, "probe.md"), "w") as f:
    f.write(text)
  print(text)
  return 0
