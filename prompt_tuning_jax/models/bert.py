"""BERT (post-LN, learned absolute positions) and its classification heads, in Flax linen; the embeddings and
encoder layers it composes are models/bert_stack.py's.

Calling convention (HF): `model.apply({'params': params}, input_ids, attention_mask, token_type_ids)`;
a missing attention_mask attends to every token that is not `pad_token_id`.

Seams (DESIGN.md): `embed` -> `combine_inputs` (input_transform slot: prompts join the LayerNorm-ed
embeddings, so they get no position embedding) -> `encode_from_embeddings`; the other slots go down to
the layers. Parameter names and their HF counterparts (checkpoints/hf_bert.py holds the full map):
  embeddings/{word,position,token_type}_embeddings/embedding   embeddings.*_embeddings.weight
  embeddings/layer_norm                                        embeddings.LayerNorm
  encoder/layers_N/attention/{query,key,value,out}             encoder.layer.N.attention.{self.*,output.dense}
  encoder/layers_N/post_attention_layer_norm                   encoder.layer.N.attention.output.LayerNorm
  encoder/layers_N/mlp/{wi,wo}                                 encoder.layer.N.{intermediate,output}.dense
  encoder/layers_N/post_mlp_layer_norm                         encoder.layer.N.output.LayerNorm
  pooler                                                       pooler.dense
Shapes: b=batch, l=length, d=embed.
"""
from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import rows
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.models.bert_stack import BertEmbeddings, BertEncoder, dense
from prompt_tuning_jax.models.slots import NO_SLOTS, Slots

Array = jax.Array


@flax.struct.dataclass
class BertOutput:
  """last_hidden_state [b, l, d] (l grows when prompts are added); pooler_output [b, d] = tanh-dense of position 0."""
  last_hidden_state: Array
  pooler_output: Array


class BertModel(nn.Module):
  """Embeddings -> input_transform -> dropout -> encoder; `pool` adds the tanh pooler on position 0.

  Attributes:
    config: sizes. slots: PEFT slots (factories get backbone='bert'); all None gives the base model exactly.
  """
  config: BertConfig
  slots: Slots = NO_SLOTS

  def setup(self):
    cfg = self.config
    slots = self.slots.for_backbone("bert")
    self.embeddings = BertEmbeddings(cfg)
    self.input_transform = slots.make("input_transform", where="encoder", embed_dim=cfg.embed_dim)
    self.dropout = nn.Dropout(cfg.dropout_rate)
    self.encoder = BertEncoder(cfg, slots)
    # NOTE: a square kernel needs two distinct logical names; 'mlp' names the pooled features (as flaxformer).
    self.pooler = dense(cfg, cfg.embed_dim, ("embed", "mlp"), "pooler")

  def embed(self, input_ids: Array, token_type_ids: Optional[Array] = None) -> Array:
    """[b, l] ids (and token types, default 0) -> LayerNorm-ed embeddings [b, l, d]."""
    token_type_ids = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
    return self.embeddings(input_ids, token_type_ids)

  def combine_inputs(self, embedded: Array, mask: Array, input_ids: Array, *,
                     prompt_index: Optional[Array] = None, deterministic: bool = True):
    """The input_transform slot (prompts): ([b, l, d], [b, l]) -> ([b, l', d], [b, l'])."""
    if self.input_transform is None:
      return embedded, mask
    return self.input_transform(embedded, mask, input_ids, prompt_index=prompt_index, deterministic=deterministic)

  def encode_from_embeddings(self, embedded: Array, mask: Array, input_ids: Array, *,
                             deterministic: bool = True, cls_only: bool = False) -> Array:
    """Embedding dropout and the layers: [b, l, d] (or rows.RowBlocks) and [b, l] bool mask -> [b, l, d]
    ([b, 1, d] if cls_only)."""
    h = rows.rowwise(lambda block: self.dropout(block, deterministic=deterministic), embedded)
    return self.encoder(h, mask, input_ids, deterministic=deterministic, last_layer_rows=1 if cls_only else None)

  def encode(self, input_ids: Array, attention_mask: Optional[Array] = None,
             token_type_ids: Optional[Array] = None, *, prompt_index: Optional[Array] = None,
             enable_dropout: bool = False, cls_only: bool = False) -> tuple[Array, Array]:
    """[b, l] ids -> (hidden [b, l', d], mask [b, l'] bool); l' > l when prompts are added.

    `prompt_index` [b] picks each example's prompt from a prompt bank (ensembles, mixed-task batches).
    cls_only: the last layer computes position 0 alone (hidden [b, 1, d]); what the pooler reads is unchanged.
    """
    mask = input_ids != self.config.pad_token_id if attention_mask is None else attention_mask.astype(bool)
    embedded, mask = self.combine_inputs(self.embed(input_ids, token_type_ids), mask, input_ids,
                                         prompt_index=prompt_index, deterministic=not enable_dropout)
    return self.encode_from_embeddings(embedded, mask, input_ids, deterministic=not enable_dropout,
                                       cls_only=cls_only), mask

  def token_rows(self, outputs: Array, length: int) -> Array:
    """Per-row outputs [b, l', ...] -> the rows of the `length` input tokens [b, l, ...]: without the rows the
    input_transform slot inserted (its `token_rows`, e.g. a prompt's after [CLS]); as they are when l' = l."""
    if outputs.shape[1] == length:
      return outputs
    drop = getattr(self.input_transform, "token_rows", None)
    if drop is None:
      raise ValueError(f"the input_transform slot's {type(self.input_transform).__name__} turned {length} input rows "
                       f"into {outputs.shape[1]} but has no token_rows method to drop its own (models/slots.py)")
    return drop(outputs)

  def pool(self, hidden: Array) -> Array:
    """[b, l, d] -> tanh(dense(hidden[:, 0])) [b, d]."""
    return jnp.tanh(self.pooler(hidden[:, 0]))

  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, *, prompt_index: Optional[Array] = None,
               enable_dropout: bool = False, cls_only: bool = False) -> BertOutput:
    """cls_only: only the pooler is needed (last_hidden_state is then [b, 1, d]; see `encode`)."""
    hidden, _ = self.encode(input_ids, attention_mask, token_type_ids, prompt_index=prompt_index,
                            enable_dropout=enable_dropout, cls_only=cls_only)
    return BertOutput(last_hidden_state=hidden, pooler_output=self.pool(hidden))


POOLINGS = ("pooler", "cls", "mean")
"""What the sequence classifier reads (`BertForSequenceClassification.pooling`)."""


class BertForSequenceClassification(nn.Module):
  """`bert` -> pooled features [b, d] -> dropout -> `classifier` Dense(num_labels): logits [b, num_labels] float32.

  Attributes:
    config / slots: as BertModel.
    pooling: the features the classifier reads, f [b, d]:
      'pooler'  tanh(dense(h[:, 0])), HF's BertForSequenceClassification (the default; logits equal HF's);
      'cls'     h[:, 0], the last layer's [CLS] row without the pooler (FL-tuning's official head);
      'mean'    the mean of h over the rows the encoder attended to (every real token and any inserted prompt
                row; padding excluded), how sentence-transformers trained all-MiniLM-L6-v2.
      The pooler's parameters exist with every choice (checkpoints carry them; HF export writes them), and
      'cls' and 'pooler' compute the last layer's row 0 alone (`cls_only`; exact).
  `features` returns f; `__call__` the logits. f is also sown as intermediates/features (for diagnostics).
  """
  config: BertConfig
  slots: Slots = NO_SLOTS
  pooling: str = "pooler"

  def setup(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"BertForSequenceClassification.pooling={self.pooling!r}; expected one of {POOLINGS}")
    self.bert = BertModel(self.config, self.slots)
    self.dropout = nn.Dropout(self.config.dropout_rate)
    self.classifier = dense(self.config, self.config.num_labels, ("embed", "labels"), "classifier")

  def features(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, *, prompt_index: Optional[Array] = None,
               enable_dropout: bool = False) -> Array:
    """[b, l] ids -> the pooled features f [b, d] the classifier reads (before its dropout)."""
    hidden, mask = self.bert.encode(input_ids, attention_mask, token_type_ids, prompt_index=prompt_index,
                                    enable_dropout=enable_dropout, cls_only=self.pooling != "mean")
    if self.pooling == "mean":
      weights = mask.astype(hidden.dtype)[..., None]  # [b, l', 1]
      pooled = (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
    else:
      pooled = self.bert.pool(hidden) if self.pooling == "pooler" else hidden[:, 0]
    if self.pooling != "pooler" and self.is_initializing():
      self.bert.pool(hidden)  # creates the pooler's parameters, unused by this pooling
    self.sow("intermediates", "features", pooled)
    return pooled

  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, *, prompt_index: Optional[Array] = None,
               enable_dropout: bool = False) -> Array:
    pooled = self.features(input_ids, attention_mask, token_type_ids, prompt_index=prompt_index,
                           enable_dropout=enable_dropout)
    return self.classifier(self.dropout(pooled, deterministic=not enable_dropout)).astype(jnp.float32)


class BertForTokenClassification(nn.Module):
  """`bert` (no pooler, as HF) -> dropout -> per-token `classifier`: logits [b, l, num_labels] float32, one row
  per input token: rows the input_transform slot inserted (a prompt) are dropped (`BertModel.token_rows`), so
  the logits line up with the labels."""
  config: BertConfig
  slots: Slots = NO_SLOTS

  @nn.compact
  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, *, prompt_index: Optional[Array] = None,
               enable_dropout: bool = False) -> Array:
    cfg = self.config
    bert = BertModel(cfg, self.slots, name="bert")
    hidden, _ = bert.encode(input_ids, attention_mask, token_type_ids, prompt_index=prompt_index,
                            enable_dropout=enable_dropout)  # [b, l', d]
    hidden = nn.Dropout(cfg.dropout_rate)(hidden, deterministic=not enable_dropout)
    logits = dense(cfg, cfg.num_labels, ("embed", "labels"), "classifier")(hidden).astype(jnp.float32)
    return bert.token_rows(logits, input_ids.shape[1])  # [b, l', C] -> [b, l, C]


HEADS = {"sequence_classification": BertForSequenceClassification,
         "token_classification": BertForTokenClassification}
