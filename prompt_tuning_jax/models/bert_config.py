"""BERT configuration and size presets (BERT-base, BERT-large; HF config.json conversion)."""
import dataclasses
from typing import Any

import jax.numpy as jnp

from prompt_tuning_jax.models import layers


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Sizes of a BERT model; the defaults are BERT-base (uncased).

  Attributes:
    vocab_size / max_position_embeddings / type_vocab_size: rows of the three embedding tables.
    embed_dim: hidden_size. num_heads / head_dim: attention heads and size per head.
    mlp_dim: FFN hidden units (intermediate_size). num_layers: depth.
    activation: FFN activation ('gelu' is the exact erf GELU, as HF's 'gelu').
    dropout_rate: hidden dropout (embeddings, sublayer outputs, heads); attention_dropout_rate: on the weights.
    pad_token_id: padding id, the default attention mask. num_labels: classifier outputs.
    dtype: activation dtype; params are `param_dtype` (strings or jnp dtypes).
  """
  vocab_size: int = 30522
  embed_dim: int = 768
  num_heads: int = 12
  head_dim: int = 64
  mlp_dim: int = 3072
  num_layers: int = 12
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_epsilon: float = 1e-12
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  activation: str = "gelu"
  pad_token_id: int = 0
  num_labels: int = 2
  dtype: Any = "float32"
  param_dtype: Any = "float32"

  @property
  def activation_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  @property
  def parameter_dtype(self) -> Any:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes) -> "BertConfig":
    return dataclasses.replace(self, **changes)


BERT_BASE = BertConfig()  # 109,482,240 parameters with the pooler.
BERT_LARGE = BertConfig(embed_dim=1024, num_heads=16, mlp_dim=4096, num_layers=24)  # 335,141,888.
PRESETS: dict[str, BertConfig] = {"bert_base": BERT_BASE, "bert_large": BERT_LARGE}


def preset(name: str, **overrides) -> BertConfig:
  """A named size preset ('bert_base', 'bert_large'), with field overrides."""
  if name not in PRESETS:
    raise ValueError(f"unknown BERT preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides)


def bert_config_from_hf(hf: dict[str, Any], **overrides) -> BertConfig:
  """Builds our config from a HF BERT config.json dict; `overrides` replace any field."""
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"position_embedding_type={hf['position_embedding_type']!r}; only 'absolute' is supported")
  fields = dict(
      vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"], num_heads=hf["num_attention_heads"],
      head_dim=hf["hidden_size"] // hf["num_attention_heads"], mlp_dim=hf["intermediate_size"],
      num_layers=hf["num_hidden_layers"], max_position_embeddings=hf["max_position_embeddings"],
      type_vocab_size=hf["type_vocab_size"], layer_norm_epsilon=hf.get("layer_norm_eps", 1e-12),
      dropout_rate=hf.get("hidden_dropout_prob", 0.1),
      attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.1),
      activation=hf.get("hidden_act", "gelu"), pad_token_id=hf.get("pad_token_id", 0) or 0,
      num_labels=len(hf["id2label"]) if "id2label" in hf else hf.get("num_labels", 2))
  layers.activation(fields["activation"])  # fails early on an unknown activation
  return BertConfig(**{**fields, **overrides})
