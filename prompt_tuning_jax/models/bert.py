"""BERT encoder (post-LN, learned absolute positions) with classification heads, in Flax linen.

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

from prompt_tuning_jax.models import layers, rows
from prompt_tuning_jax.models.attention import MultiHeadAttention
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.models.mlp import MlpBlock
from prompt_tuning_jax.models.slots import ADAPTERS_AFTER_DROPOUT, NO_SLOTS, Slots

Array = jax.Array
INIT = nn.initializers.normal(stddev=0.02)  # BERT's initializer_range for every kernel and table.


def _dense(cfg: BertConfig, features: int, axes: tuple[str, str], name: str) -> layers.Dense:
  return layers.Dense(features, axes, use_bias=True, kernel_init=INIT, dtype=cfg.activation_dtype,
                      param_dtype=cfg.parameter_dtype, name=name)


def _norm(cfg: BertConfig, name: str) -> layers.LayerNorm:
  return layers.LayerNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, cfg.parameter_dtype, name=name)


@flax.struct.dataclass
class BertOutput:
  """last_hidden_state [b, l, d] (l grows when prompts are added); pooler_output [b, d] = tanh-dense of position 0."""
  last_hidden_state: Array
  pooler_output: Array


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
    adapter = self.slots.make(slot, where=where, embed_dim=x.shape[-1])
    dropout = nn.Dropout(self.config.dropout_rate)
    adapter_after_dropout = slot in ADAPTERS_AFTER_DROPOUT
    if adapter_after_dropout:
      out = dropout(out, deterministic=deterministic)
    if adapter is not None:
      out = adapter(x, out, deterministic=deterministic).astype(out.dtype)
    if not adapter_after_dropout:
      out = dropout(out, deterministic=deterministic)
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
    self.pooler = _dense(cfg, cfg.embed_dim, ("embed", "mlp"), "pooler")

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
    self.classifier = _dense(self.config, self.config.num_labels, ("embed", "labels"), "classifier")

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
    logits = _dense(cfg, cfg.num_labels, ("embed", "labels"), "classifier")(hidden).astype(jnp.float32)
    return bert.token_rows(logits, input_ids.shape[1])  # [b, l', C] -> [b, l, C]


HEADS = {"sequence_classification": BertForSequenceClassification,
         "token_classification": BertForTokenClassification}
