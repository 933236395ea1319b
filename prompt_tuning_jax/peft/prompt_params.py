"""Prompt banks in a parameter tree: found (`is_prompt_bank`), stacked (`stack_prompts`) and drawn.

The bank is `encoder/prompt/prompt` `[K, P, d]` (peft/prompts.py); trained single prompts stack into one bank
for ensembles and mixed-task batches.

Table-based prompt inits (prompt_init.py: SampledVocab, ClassLabels, FromText) cannot run at `model.init`:
the frozen table is not loaded yet, so the bank is NaN until `initialize_prompt(params, initializer, rng)`
runs after the frozen checkpoint is loaded (peft/prompts.py's docstring; gin: the run's `INIT_STEP`). It draws
every bank from `seam_table(params)`, the token table as it looks where the prompt joins: T5's raw
`token_embedder` table (the prompt joins the raw embedded input), BERT's `word_embeddings` plus the segment-A
token-type row through the frozen embeddings LayerNorm (the prompt joins the LayerNorm-ed embeddings: token
rows of norm ~9.4 on MiniLM-L6's SST-2 dev text, seam-table rows ~11.2, raw word rows ~1.1;
scripts/prompt_scale.py measures them).
"""
import functools
import operator
from collections.abc import Mapping
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning_jax.models import layers
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.peft import prompt_init

Array = jax.Array
# NOTE: a LayerNorm's epsilon is not in params; BertConfig's default, and every shipped checkpoint's.
BERT_LAYER_NORM_EPSILON = BertConfig.layer_norm_epsilon
TABLE_PATHS = (("token_embedder", "embedding"), ("word_embeddings", "embedding"))  # T5, BERT


def stack_prompts(prompts: Sequence[Any]) -> Any:
  """Stacks trained prompts into one bank `[K, P, d]` along the bank axis.

  Each item is a prompt `[P, d]`, a bank `[k, P, d]`, or a prompt module's params `{'prompt': [k, P, d]}`;
  dicts give back `{'prompt': bank}`, so `params['encoder']['prompt'] = stack_prompts([...])` works.
  """
  is_params = [isinstance(p, Mapping) for p in prompts]
  if any(is_params) and not all(is_params):
    raise ValueError("stack_prompts: mix of param dicts and arrays; pass one kind")
  arrays = [p["prompt"] if isinstance(p, Mapping) else p for p in prompts]
  banks = [a[None] if a.ndim == 2 else a for a in arrays]
  shapes = {b.shape[1:] for b in banks}
  if len(shapes) != 1:
    raise ValueError(f"stack_prompts: prompts have different [P, d] shapes {sorted(shapes)}")
  bank = jnp.concatenate(banks, axis=0)
  return {"prompt": bank} if all(is_params) else bank


def is_prompt_bank(path: str) -> bool:
  """Whether a flat parameter path ('encoder/prompt/prompt') is a prompt module's bank."""
  return path.split("/")[-2:] == ["prompt", "prompt"]


def _table_path(params: dict) -> tuple:
  """The path of the one token-embedding table in params (TABLE_PATHS)."""
  paths = [tuple(path.split("/")) for path in flatten_params(params) if tuple(path.split("/")[-2:]) in TABLE_PATHS]
  if len(paths) != 1:
    raise ValueError(f"expected one token_embedder or word_embeddings table in params, found {len(paths)}")
  return paths[0]


def _get(tree: Mapping, path: tuple) -> Any:
  return functools.reduce(operator.getitem, path, tree)


def find_embedding_table(params: dict) -> Array:
  """The frozen token-embedding table `[vocab, d]`, raw: T5 `token_embedder/embedding`, BERT `word_embeddings`."""
  return _get(params, _table_path(params))


def seam_table(params: dict, layer_norm_epsilon: float = BERT_LAYER_NORM_EPSILON) -> Array:
  """The token table as it looks where the prompt joins the input: `[vocab, d]`; table-based inits draw from it.

  T5: the raw `token_embedder/embedding` table, unchanged (the prompt joins the raw embedded input).
  BERT: `embeddings/layer_norm`(word_embeddings [vocab, d] + token_type_embeddings[0] [d]), float32: row t is
  what token t of segment A looks like at the seam minus its position embedding, which prompt rows never get
  (models/bert.py `combine_inputs`). `layer_norm_epsilon`: the model's (BertConfig.layer_norm_epsilon).
  """
  path = _table_path(params)
  if path[-2] == "token_embedder":
    return _get(params, path)
  embeddings = _get(params, path[:-2])  # BERT `embeddings`: the word, position and token-type tables, layer_norm
  rows = embeddings["word_embeddings"]["embedding"].astype(jnp.float32)
  rows = rows + embeddings["token_type_embeddings"]["embedding"][0].astype(jnp.float32)  # [vocab, d] + [d]
  return layers.LayerNorm(layer_norm_epsilon).apply({"params": embeddings["layer_norm"]}, rows)  # [vocab, d]


def initialize_prompt(params: dict, initializer: Any, rng: Array, embedding_table: Optional[Array] = None,
                      layer_norm_epsilon: float = BERT_LAYER_NORM_EPSILON) -> dict:
  """Draws every prompt bank in `params` (plain, unboxed) from `initializer`; returns new params.

  Call it once, after the frozen checkpoint is loaded and before training (module docstring).
  `embedding_table` [vocab, d] defaults to `seam_table(params, layer_norm_epsilon)`.
  """
  table = seam_table(params, layer_norm_epsilon) if embedding_table is None else embedding_table
  flat = flatten_params(params)
  banks = [path for path in flat if is_prompt_bank(path)]
  if not banks:
    raise ValueError("initialize_prompt: no 'prompt/prompt' parameter in params (is the prompt method bound?)")
  for index, path in enumerate(banks, start=1):  # bank i draws from fold_in(rng, i), in the tree's order
    flat[path] = prompt_init.draw_bank(initializer, jax.random.fold_in(rng, index), flat[path].shape,
                                       table).astype(flat[path].dtype)
  return unflatten_params(flat)
