"""BERT's embeddings and post-LN encoder layers (models/bert.py composes them), in Flax linen.

Parameter names are models/bert.py's table. Shapes: b=batch, l=length, d=embed.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers, rows
from prompt_tuning_jax.models.attention import MultiHeadAttention
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.models.mlp import MlpBlock
from prompt_tuning_jax.models.slots import NO_SLOTS, Slots

Array = jax.Array
INIT = nn.initializers.normal(stddev=0.02)  # BERT's initializer_range for every kernel and table.


def dense(cfg: BertConfig, features: int, axes: tuple[str, str], name: str) -> layers.Dense:
  """A biased Dense of BERT's init and dtypes: [..., d_in] -> [..., features] (the model's pooler and heads too)."""
  return layers.Dense(features, axes, use_bias=True, kernel_init=INIT, dtype=cfg.activation_dtype,
                      param_dtype=cfg.parameter_dtype, name=name)


def _norm(cfg: BertConfig, name: str) -> layers.LayerNorm:
  return layers.LayerNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, cfg.parameter_dtype, name=name)


class BertEmbeddings(nn.Module):
  """LayerNorm(word + position + token type embeddings); no dropout (the model applies it after the prompt seam)."""
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids: Array, token_type_ids: Array) -> Array:
    """[b, l] ids and token types -> [b, l, d]."""
    cfg = self.config
    length = input_ids.shape[-1]
    if length > cfg.max_position_embeddings:
      raise ValueError(f"input length {length} exceeds max_position_embeddings={cfg.max_position_embeddings}")
    embed = lambda n, axes, name: layers.Embed(n, cfg.embed_dim, axes, INIT, cfg.activation_dtype,
                                               cfg.parameter_dtype, name=name)
    x = (embed(cfg.vocab_size, ("vocab", "embed"), "word_embeddings")(input_ids)
         + embed(cfg.type_vocab_size, ("token_types", "embed"), "token_type_embeddings")(token_type_ids)
         + embed(cfg.max_position_embeddings, ("positions", "embed"), "position_embeddings")(jnp.arange(length)))
    return _norm(cfg, "layer_norm")(x)


class BertLayer(nn.Module):
  """Post-LN layer: a = LN1(h + Drop(MHA(h))); out = LN2(a + Drop(FFN(a))), with the adapter slots of
  METHODS.md §D(2): the attention adapter before the dropout, a = LN1(h + Drop(A(h, MHA(h)))), the FFN adapter
  after it, out = LN2(a + A(a, Drop(FFN(a)))) (the official code adds it to dropout(fc2(...)))."""
  config: BertConfig
  slots: Slots = NO_SLOTS

  def _add_and_norm(self, x: Array, out: Array, slot: str, where: str, norm: str, deterministic: bool) -> Array:
    """LN(x + Drop(adapter(x, out))), or LN(x + adapter(x, Drop(out))): x is the sublayer input, out its
    output [b, l, d]."""
    out = layers.adapted_dropout(self.slots, slot, where, self.config.dropout_rate, x, out, deterministic)
    return _norm(self.config, norm)(x + out)

  @nn.compact
  def __call__(self, h: Array, mask: Array, *, deterministic: bool = True,
               query_rows: Optional[int] = None) -> Array:
    """h [b, l, d] (or rows.RowBlocks), mask [b, 1, 1, l] (keys only) -> [b, l, d], or [b, query_rows, d].

    query_rows: compute only the first rows' outputs (their queries still attend to every row's keys and
    values); each is the same as in the full layer.
    """
    cfg = self.config
    if query_rows is not None:
      h = rows.join_rows(h)
    x = h if query_rows is None else h[:, :query_rows]
    out = MultiHeadAttention(cfg.num_heads, cfg.head_dim, "encoder/attention", use_bias=True,
                             dropout_rate=cfg.attention_dropout_rate, kernel_init=INIT, slots=self.slots,
                             dtype=cfg.activation_dtype, param_dtype=cfg.parameter_dtype, name="attention")(
                                 x, h, mask, deterministic=deterministic)
    x = rows.join_rows(x)
    a = self._add_and_norm(x, out, "post_attention_adapter", "encoder/attention", "post_attention_layer_norm",
                           deterministic)
    out = MlpBlock(cfg.mlp_dim, (cfg.activation,), "encoder/mlp", use_bias=True, kernel_init=INIT,
                   slots=self.slots, dtype=cfg.activation_dtype, param_dtype=cfg.parameter_dtype, name="mlp")(
                       a, deterministic=deterministic)
    return self._add_and_norm(a, out, "post_mlp_adapter", "encoder/mlp", "post_mlp_layer_norm", deterministic)


class BertEncoder(nn.Module):
  """Layers `layers_0..`; the layer_input_hook slot (made once, where='encoder') runs before each layer."""
  config: BertConfig
  slots: Slots = NO_SLOTS

  @nn.compact
  def __call__(self, h: Array, mask: Array, input_ids: Array, *, deterministic: bool = True,
               last_layer_rows: Optional[int] = None) -> Array:
    """h [b, l, d], mask [b, l] bool, input_ids [b, l0] (hook context) -> [b, l, d].

    last_layer_rows: the last layer computes only that many leading rows ([b, last_layer_rows, d] out): the
    sequence classifier reads row 0 alone, so the rest of the last layer's queries and FFN would be dead work.
    """
    cfg = self.config
    hook = self.slots.make("layer_input_hook", where="encoder", num_layers=cfg.num_layers, embed_dim=cfg.embed_dim)
    state = None
    for i in range(cfg.num_layers):
      if hook is not None:
        h, state = hook(rows.join_rows(h), layer=i, state=state, context={"tokens": input_ids, "mask": mask},
                        deterministic=deterministic)
      query_rows = last_layer_rows if i == cfg.num_layers - 1 else None
      h = BertLayer(cfg, self.slots, name=f"layers_{i}")(h, mask[:, None, None, :], deterministic=deterministic,
                                                         query_rows=query_rows)
    return h
