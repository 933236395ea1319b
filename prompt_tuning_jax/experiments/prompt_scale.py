"""Prompt rows against text rows on the real MiniLM-L6: the scale of each prompt init, and GPC's cell by depth.

  python scripts/prompt_scale.py --examples=32 --out=runs/prompt_scale.json

Measured on the first `--examples` SST-2 dev examples (bert_glue_sst2, `--length` ids), the frozen
all-MiniLM-L6-v2, prompt length `--prompt_length`:
  (a) seam: the mean row norm of the token rows where the prompt joins (the LayerNorm-ed embeddings, real
      tokens only) and of the prompt rows each init draws, before and after drawing from the seam table:
        before  the raw word-embedding table (prompt_params.find_embedding_table), sampled vocab from id 1000,
                random U[-0.5, 0.5];
        after   prompt_params.seam_table (word + token type 0 through the embeddings LayerNorm), sampled vocab
                from id 1996 ('the'), random MatchTableNorm(RandomUniform()).
      Class labels are ['negative', 'positive'] (rows 0-1; reported alone and with the sampled rest).
  (b) GPC (reconstructed cell, freshly initialised: N(0, 0.02) kernels, biases +-1.5): the mean row norm of
      the prompt rows and of the text rows entering each encoder layer, for
        old        the 'before' sampled-vocab init, unbounded gates (max_gate_sum=None);
        new_init   the 'after' init, unbounded gates (what the gate bound alone changes);
        new        the 'after' init, gates with F + R <= 1 (max_gate_sum=1, the default);
      and, as gates that training has opened (both biases +3, F ~ R ~ 0.95), the 'after' init with
        open_unbounded (max_gate_sum=None) and open_bounded (max_gate_sum=1).
Prints both tables and writes them as JSON to --out.
"""
import argparse
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax import minilm
from prompt_tuning_jax.checkpoints import hf_bert
from prompt_tuning_jax.experiments import examples
from prompt_tuning_jax.models import bert, bert_stack, rows
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.peft import gpc, prompt_init, prompt_params, prompts

LABELS = ("negative", "positive")
OLD_START, NEW_START = 1000, 1996  # sampled-vocab population starts (ids of '"' and 'the' in vocab.txt)


def mean_norm(x: np.ndarray, where: np.ndarray | None = None) -> float:
  """Mean L2 norm of the rows of x [..., d] (those where `where` [...] is true)."""
  norms = np.linalg.norm(np.asarray(x, np.float64), axis=-1)
  return float(norms.mean() if where is None else norms[where].mean())


def inits(label_ids, start: int, random: object) -> dict[str, object]:
  sampled = prompt_init.SampledVocab(population_start=start)
  return {"random": random, "sampled_vocab": sampled,
          "class_labels": prompt_init.ClassLabels(label_ids=label_ids, fallback=sampled)}


def draw(params: dict, initializer, table, length: int, seed: int) -> np.ndarray:
  """The prompt [P, d] that prompt_params.initialize_prompt draws into a model's (NaN) prompt bank."""
  d = params["embeddings"]["word_embeddings"]["embedding"].shape[1]
  with_prompt = {**params, "prompt": {"prompt": jnp.full((1, length, d), jnp.nan)}}
  filled = prompt_params.initialize_prompt(with_prompt, initializer, jax.random.key(seed), embedding_table=table)
  return np.asarray(filled["prompt"]["prompt"][0])


def seam_report(model, params, data, args) -> dict:
  """(a): {'token_rows': norm, 'seam_table_rows': norm, 'before'/'after': {init: {...}}}."""
  from tasks import vocabularies  # pylint: disable=g-import-not-at-top
  embedded = model.apply({"params": params}, data["input_ids"], data["token_type_ids"], method=bert.BertModel.embed)
  label_ids = prompt_init.encode_labels(vocabularies.bert_vocabulary(), LABELS)
  raw = prompt_params.find_embedding_table(params)
  settings = {"before": (raw, inits(label_ids, OLD_START, prompt_init.RandomUniform())),
              "after": (None, inits(label_ids, NEW_START, prompt_init.MatchTableNorm(prompt_init.RandomUniform())))}
  report = {"token_rows": mean_norm(embedded, data["attention_mask"].astype(bool)),
            "seam_table_rows": mean_norm(prompt_params.seam_table(params)), "raw_table_rows": mean_norm(raw),
            "label_ids": [list(ids) for ids in label_ids]}
  for when, (table, by_init) in settings.items():
    report[when] = {}
    for name, initializer in by_init.items():
      prompt = draw(params, initializer, table, args.prompt_length, args.seed)
      report[when][name] = {"prompt_rows": mean_norm(prompt)}
      if name == "class_labels":
        report[when][name]["label_rows"] = mean_norm(prompt[:len(LABELS)])
  return report


def layer_inputs(model, params, data) -> list[np.ndarray]:
  """The hidden states [b, l', d] entering each encoder layer (after the GPC hook), in layer order."""
  seen = []

  def record(next_fun, call_args, kwargs, context):
    if isinstance(context.module, bert_stack.BertLayer) and context.method_name == "__call__":
      seen.append(np.asarray(rows.join_rows(call_args[0])))
    return next_fun(*call_args, **kwargs)

  with nn.intercept_methods(record):
    model.apply({"params": params}, data["input_ids"], data["attention_mask"], data["token_type_ids"])
  return seen


def gpc_report(config, frozen, data, args) -> dict:
  """(b): {setting: {'prompt_rows': [per layer], 'text_rows': [per layer]}}."""
  p = args.prompt_length
  open_gates = {"forget_bias": 3.0, "remember_bias": 3.0}
  settings = {"old": (OLD_START, prompt_params.find_embedding_table(frozen), {"max_gate_sum": None}),
              "new_init": (NEW_START, None, {"max_gate_sum": None}), "new": (NEW_START, None, {}),
              "open_unbounded": (NEW_START, None, {**open_gates, "max_gate_sum": None}),
              "open_bounded": (NEW_START, None, open_gates)}
  mask = data["attention_mask"].astype(bool)
  text = np.concatenate([mask[:, :1], np.zeros((len(mask), p), bool), mask[:, 1:]], axis=1)  # [b, P+l]
  report = {}
  for name, (start, table, cell) in settings.items():
    initializer = prompt_init.SampledVocab(population_start=start)
    slots = Slots(input_transform=functools.partial(prompts.prompt_factory, prompt_length=p, initializer=initializer),
                  layer_input_hook=functools.partial(gpc.gpc_factory, prompt_length=p, **cell))
    model = bert.BertModel(config, slots)
    fresh = nn.meta.unbox(model.init(jax.random.key(args.seed), data["input_ids"][:1])["params"])
    # the frozen MiniLM, the fresh cell, and the prompt drawn as the run's init step draws it (runs.prepare_params)
    params = {**frozen, "prompt": fresh["prompt"], "encoder": {**frozen["encoder"], "gpc": fresh["encoder"]["gpc"]}}
    params = prompt_params.initialize_prompt(params, initializer, jax.random.key(args.seed), embedding_table=table)
    inputs = layer_inputs(model, params, data)
    report[name] = {"prompt_rows": [mean_norm(h[:, 1:1 + p]) for h in inputs],
                    "text_rows": [mean_norm(h, text) for h in inputs]}
  return report


def print_tables(result: dict) -> None:
  seam = result["seam"]
  print(f"(a) seam (SST-2 dev, {result['examples']} examples): token rows {seam['token_rows']:.2f}; "
        f"seam-table rows {seam['seam_table_rows']:.2f}; raw word rows {seam['raw_table_rows']:.2f}")
  print(f"{'init':<16}{'before':>10}{'after':>10}")
  for name in seam["before"]:
    print(f"{name:<16}{seam['before'][name]['prompt_rows']:>10.2f}{seam['after'][name]['prompt_rows']:>10.2f}")
  print(f"{'  label rows':<16}{seam['before']['class_labels']['label_rows']:>10.2f}"
        f"{seam['after']['class_labels']['label_rows']:>10.2f}")
  print("(b) GPC, mean row norm entering each layer (prompt rows / text rows)")
  print(f"{'layer':<6}" + "".join(f"{name:>17}" for name in result["gpc"]))
  for layer in range(len(result["gpc"]["old"]["prompt_rows"])):
    cells = [f"{r['prompt_rows'][layer]:.2f} / {r['text_rows'][layer]:.2f}" for r in result["gpc"].values()]
    print(f"{layer:<6}" + "".join(f"{c:>17}" for c in cells))


def run(args: argparse.Namespace, command: str) -> int:
  """scripts/prompt_scale.py: (a) and (b) for its flags (`args`: examples, length, prompt_length, seed, out);
  prints both tables and writes them as JSON to `args.out`."""
  model, frozen = hf_bert.load_hf_bert(minilm.minilm_dir())
  data = examples.first_examples("bert_glue_sst2", "validation", args.length, args.examples)
  result = {"command": command, "examples": len(data["input_ids"]),
            "length": args.length, "prompt_length": args.prompt_length, "seed": args.seed,
            "seam": seam_report(model, frozen, data, args), "gpc": gpc_report(model.config, frozen, data, args)}
  print_tables(result)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  return 0
