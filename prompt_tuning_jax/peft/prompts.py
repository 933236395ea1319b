"""Prompt tuning (Lester, Al-Rfou, Constant 2021; METHODS.md §A): learned rows joined to the embedded input.

The `input_transform` slot. T5: the P prompt rows are prepended to the embedded encoder input, before the
encoder's input dropout (as the official code); relative positions then simply span the P + n sequence.
`placement='after_bos'` inserts them after the first token instead. BERT: always after [CLS] (the default
there), on the LayerNorm-ed embeddings, so [CLS] stays at position 0 and prompt rows get no position
embedding. Prompt rows are always real in the mask; padding stays masked.

The parameter is a prompt bank `encoder/prompt/prompt` `[K, P, d]` (K = `num_prompts`, 1 by default):
each example picks its prompt with `prompt_index` [b] (None = prompt 0). Trained single prompts are
stacked into a bank with `stack_prompts` (ensembles, mixed-task batches).

Initialisation (prompt_init.py) happens in two steps, because the frozen embedding table does not exist
when the module initialises (model.init draws random frozen weights; the checkpoint comes later):
  1. `model.init`: initialisers that need no table (RandomUniform, FromFile) fill the bank directly;
     table-based ones (SampledVocab, ClassLabels, FromText) leave it NaN.
  2. `initialize_prompt(params, initializer, rng)` after the frozen checkpoint is loaded: draws the bank
     from `seam_table(params)`, the token table as it looks where the prompt joins: T5's raw
     `token_embedder` table (the prompt joins the raw embedded input), BERT's `word_embeddings` plus the
     segment-A token-type row through the frozen embeddings LayerNorm (the prompt joins the LayerNorm-ed
     embeddings: token rows of norm ~9.4 on MiniLM-L6's SST-2 dev text, seam-table rows ~11.2, raw word
     rows ~1.1; scripts/prompt_scale.py measures them).
NOTE: the NaN placeholder is deliberate: forgetting step 2 fails at the first step instead of silently
training from a different init. gin binds the same `%PROMPT_INIT` to both steps (gin/methods/).
"""
import functools
import operator
from collections.abc import Mapping
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning_jax.models import layers, rows
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.peft import prompt_init

Array = jax.Array
PLACEMENTS = {"prefix": 0, "after_bos": 1}  # placement -> index of the first prompt row
DEFAULT_PLACEMENT = {"t5": "prefix", "bert": "after_bos"}
# NOTE: the input_transform slot is not told BERT's max_position_embeddings; 512 is every shipped preset's.
BERT_MAX_LENGTH = 512
# NOTE: a LayerNorm's epsilon is not in params; BertConfig's default, and every shipped checkpoint's.
BERT_LAYER_NORM_EPSILON = BertConfig.layer_norm_epsilon
TABLE_PATHS = (("token_embedder", "embedding"), ("word_embeddings", "embedding"))  # T5, BERT


def prompt_offset(backbone: str, placement: Optional[str] = None) -> int:
  """Index of the first prompt row for this backbone and placement (None = the backbone's default)."""
  placement = DEFAULT_PLACEMENT[backbone] if placement is None else placement
  if placement not in PLACEMENTS:
    raise ValueError(f"unknown prompt placement {placement!r}; known: {sorted(PLACEMENTS)}")
  if backbone == "bert" and placement != "after_bos":
    raise ValueError(f"placement={placement!r} on BERT would move [CLS] off position 0; use 'after_bos'")
  return PLACEMENTS[placement]


class Prompt(nn.Module):
  """A bank of K learned prompts `[K, P, d]` inserted at row `offset` of the embedded input.

  Attributes:
    length: P, prompt rows. embed_dim: d.
    initializer: a prompt_init initialiser (table-based ones leave NaN until `initialize_prompt`).
    num_prompts: K, the bank size.
    offset: index of the first prompt row (0 = prefix, 1 = after the first token).
    max_length: optional limit on P + input length.
    param_dtype: of the bank; float32 also under a bfloat16 backbone (it is cast to the activations').
  """
  length: int
  embed_dim: int
  initializer: Any = prompt_init.RandomUniform()
  num_prompts: int = 1
  offset: int = 0
  max_length: Optional[int] = None
  param_dtype: Any = jnp.float32

  def _init_bank(self, rng: Array, shape: Sequence[int], dtype: Any) -> Array:
    if self.initializer.needs_embedding:
      return jnp.full(shape, jnp.nan, dtype)  # filled by initialize_prompt (module docstring)
    return prompt_init.draw_bank(self.initializer, rng, shape, None).astype(dtype)

  @nn.compact
  def __call__(self, embedded: Array, mask: Array, tokens: Array, *, prompt_index: Optional[Array] = None,
               deterministic: bool = True) -> tuple[rows.Rows, Array]:
    """embedded [b, l, d], mask [b, l], prompt_index [b] or None -> ([b, P+l, d], [b, P+l]).

    The rows come back as rows.RowBlocks (before the offset, prompt, after); `rows.join_rows` joins them.
    """
    del tokens, deterministic  # The prompt joins before the input dropout; no dropout of its own.
    batch, length = mask.shape
    if self.max_length is not None and self.length + length > self.max_length:
      raise ValueError(f"prompt_length={self.length} + input length {length} = {self.length + length} "
                       f"exceeds max_length={self.max_length}")
    bank = layers.param_with_axes(self, "prompt", self._init_bank, (self.num_prompts, self.length, self.embed_dim),
                                  ("prompt_bank", "prompt", "embed"), self.param_dtype)
    if prompt_index is None:
      prompt = jnp.broadcast_to(bank[0], (batch,) + bank.shape[1:])  # [P, d] -> [b, P, d]
    else:
      # NOTE: an out-of-range index gives a NaN prompt (loud) rather than a clamped, silently wrong one.
      prompt = jnp.take(bank, prompt_index, axis=0, mode="fill", fill_value=jnp.nan)  # [b, P, d]
    o = self.offset
    # [b, l, d] -> [b, P+l, d], kept as blocks: the first layer then forms no input gradient for the token rows
    blocks = [embedded[:, :o], prompt.astype(embedded.dtype), embedded[:, o:]]
    embedded = rows.RowBlocks(block for block in blocks if block.shape[1])
    prompt_mask = jnp.ones((batch, self.length), mask.dtype)
    mask = jnp.concatenate([mask[:, :o], prompt_mask, mask[:, o:]], axis=1)  # [b, l] -> [b, P+l]
    return embedded, mask

  def token_rows(self, outputs: Array) -> Array:
    """Per-row outputs [b, P+l, ...] -> the input tokens' rows [b, l, ...] (a per-token head drops the prompt's)."""
    o = self.offset
    return jnp.concatenate([outputs[:, :o], outputs[:, o + self.length:]], axis=1)  # [b, P+l, ..] -> [b, l, ..]


def prompt_factory(*, where: str, backbone: str, embed_dim: int, prompt_length: int,
                   initializer: Any = prompt_init.RandomUniform(), num_prompts: int = 1,
                   placement: Optional[str] = None, max_length: Optional[int] = None) -> Optional[Prompt]:
  """The `input_transform` slot: a `Prompt` named 'prompt' on the encoder, None elsewhere.

  Args:
    where / backbone / embed_dim: from the backbone (models/slots.py).
    prompt_length: P (gin: %PROMPT_LENGTH). initializer: a prompt_init initialiser (gin: %PROMPT_INIT).
    num_prompts: K, the size of the prompt bank (ensembles).
    placement: 'prefix' or 'after_bos'; None = the backbone's default (T5 'prefix', BERT 'after_bos').
    max_length: limit on P + input length; None = unlimited on T5, BERT_MAX_LENGTH on BERT.
  """
  if where != "encoder":
    return None
  if max_length is None and backbone == "bert":
    max_length = BERT_MAX_LENGTH
  return Prompt(prompt_length, embed_dim, initializer, num_prompts, offset=prompt_offset(backbone, placement),
                max_length=max_length, name="prompt")


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
