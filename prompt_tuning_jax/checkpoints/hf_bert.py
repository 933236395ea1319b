"""Hugging Face BERT (BertModel, BertFor{Sequence,Token}Classification safetensors) <-> our parameter tree.

HF stores torch Linear weights as [out, in]; ours are [in, out]. Head checkpoints prefix the base names with
`bert.` and add `classifier.*`; both layouts load. As transformers does, loading ignores the
`embeddings.position_ids` buffer, the pretraining heads `cls.*`, and `pooler.*` for the token head (it has
no pooler), and reads legacy `LayerNorm.gamma`/`.beta` as `.weight`/`.bias`. Anything else that is
missing, left over or of the wrong shape raises hf_io's ValueError. A head whose `classifier.*` is absent
(a base checkpoint) starts from a fresh init.
"""
import re
from typing import Any, Optional

import flax.linen as nn
import jax
import numpy as np

from prompt_tuning_jax.checkpoints import hf_io
from prompt_tuning_jax.models.bert import HEADS, BertModel
from prompt_tuning_jax.models.bert_config import BertConfig, bert_config_from_hf

HF_ARCHITECTURES = {"sequence_classification": "BertForSequenceClassification",
                    "token_classification": "BertForTokenClassification"}
# Ours under encoder/layers_N -> HF under encoder.layer.N.
_LAYER = {
    "attention/query": "attention.self.query", "attention/key": "attention.self.key",
    "attention/value": "attention.self.value", "attention/out": "attention.output.dense",
    "post_attention_layer_norm": "attention.output.LayerNorm",
    "mlp/wi": "intermediate.dense", "mlp/wo": "output.dense", "post_mlp_layer_norm": "output.LayerNorm",
}
_IGNORED = re.compile(r"^(bert\.)?embeddings\.position_ids$|^cls\.")
_LEGACY_NAMES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
_LEGACY = re.compile(r"LayerNorm\.(gamma|beta)$")


def hf_config_from_bert(config: BertConfig) -> dict[str, Any]:
  """The HF config.json dict for our config (inverse of models/bert.py's `bert_config_from_hf`)."""
  if config.num_heads * config.head_dim != config.embed_dim:
    raise ValueError(f"HF BERT needs num_heads * head_dim == embed_dim; got {config.num_heads} * "
                     f"{config.head_dim} != {config.embed_dim}")
  return {
      "architectures": ["BertModel"], "model_type": "bert", "vocab_size": config.vocab_size,
      "hidden_size": config.embed_dim, "num_attention_heads": config.num_heads,
      "intermediate_size": config.mlp_dim, "num_hidden_layers": config.num_layers,
      "max_position_embeddings": config.max_position_embeddings, "type_vocab_size": config.type_vocab_size,
      "layer_norm_eps": config.layer_norm_epsilon, "hidden_dropout_prob": config.dropout_rate,
      "attention_probs_dropout_prob": config.attention_dropout_rate, "hidden_act": config.activation,
      "pad_token_id": config.pad_token_id, "position_embedding_type": "absolute",
      "id2label": {str(i): f"LABEL_{i}" for i in range(config.num_labels)},
  }


def name_map(config: BertConfig, head: Optional[str] = None, prefix: str = "") -> dict[str, tuple[str, bool]]:
  """Our '/'-joined parameter path -> (HF name, transpose?); `prefix` ('' or 'bert.') goes on base names."""
  base = "bert/" if head else ""
  names = {}

  def linear(ours: str, theirs: str):
    names[f"{ours}/kernel"], names[f"{ours}/bias"] = (f"{theirs}.weight", True), (f"{theirs}.bias", False)

  def norm(ours: str, theirs: str):
    names[f"{ours}/scale"], names[f"{ours}/bias"] = (f"{theirs}.weight", False), (f"{theirs}.bias", False)

  for table in ("word", "position", "token_type"):
    names[f"{base}embeddings/{table}_embeddings/embedding"] = (f"{prefix}embeddings.{table}_embeddings.weight", False)
  norm(f"{base}embeddings/layer_norm", f"{prefix}embeddings.LayerNorm")
  for i in range(config.num_layers):
    for ours, theirs in _LAYER.items():
      (norm if theirs.endswith("LayerNorm") else linear)(
          f"{base}encoder/layers_{i}/{ours}", f"{prefix}encoder.layer.{i}.{theirs}")
  if head != "token_classification":
    linear(f"{base}pooler", f"{prefix}pooler.dense")
  if head:
    linear("classifier", "classifier")
  return names


def _model(config: BertConfig, head: Optional[str]) -> nn.Module:
  if head is not None and head not in HEADS:
    raise ValueError(f"head={head!r}; known heads: None, {sorted(HEADS)}")
  return (HEADS[head] if head else BertModel)(config)


def params_from_hf(config: BertConfig, tensors: dict[str, np.ndarray], head: Optional[str] = None,
                   source: str = "<tensors>", rng: Optional[jax.Array] = None) -> dict:
  """HF-named tensors -> our nested params for `BertModel` (head=None) or a head model (see HEADS)."""
  model = _model(config, head)
  tensors = {_LEGACY.sub(lambda m: _LEGACY_NAMES[m.group(0)], k): v
             for k, v in tensors.items() if not _IGNORED.search(k)}
  prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
  if head == "token_classification":
    tensors = {k: v for k, v in tensors.items() if not k.startswith(f"{prefix}pooler.")}
  example = np.ones((1, 4), np.int32)
  expected = hf_io.abstract_params(model, example)
  fresh_head = head is not None and not any(k.startswith("classifier.") for k in tensors)
  if fresh_head:
    expected = {k: v for k, v in expected.items() if not k.startswith("classifier/")}
  params = hf_io.params_from_tensors(expected, name_map(config, head, prefix), tensors, source)
  if fresh_head:
    # Only the classifier leaves are outputs, so XLA prunes the rest of the init (nothing else is allocated).
    init = jax.jit(lambda key: nn.meta.unbox(model.init(key, example)["params"]["classifier"]))
    params["classifier"] = jax.tree_util.tree_map(np.asarray, init(jax.random.key(0) if rng is None else rng))
  return params


def load_hf_bert(path: str, *, head: Optional[str] = None, num_labels: Optional[int] = None,
                 rng: Optional[jax.Array] = None) -> tuple[nn.Module, dict]:
  """Reads a HF BERT directory (config.json + model.safetensors) -> (model, params).

  Args:
    head: None (BertModel), 'sequence_classification' or 'token_classification'.
    num_labels: classifier outputs; default the config's id2label size (HF default 2).
    rng: init of a classifier the checkpoint lacks.
  """
  hf_config, tensors = hf_io.read_hf_dir(path)
  config = bert_config_from_hf(hf_config, **({} if num_labels is None else {"num_labels": num_labels}))
  return _model(config, head), params_from_hf(config, tensors, head, path, rng)


def _head_of(params: dict) -> Optional[str]:
  """The head a tree belongs to: None (base), or the head model whose `bert` has (sequence) or lacks (token) a pooler."""
  if "bert" not in params:
    return None
  return "sequence_classification" if "pooler" in params["bert"] else "token_classification"


def hf_tensors(params: dict, config: BertConfig) -> dict[str, np.ndarray]:
  """Our params (base or head tree) -> HF-named float32 tensors."""
  head = _head_of(params)
  return hf_io.tensors_from_params(params, name_map(config, head, "bert." if head else ""))


def export_hf_bert(params: dict, config: BertConfig, path: str) -> None:
  """Writes config.json + model.safetensors that `load_hf_bert` and transformers read back.

  A base tree is written with BertModel names; a head tree (`bert` + `classifier`) with the head's names
  and architecture.
  """
  hf_config: dict[str, Any] = hf_config_from_bert(config)
  head = _head_of(params)
  if head:
    hf_config["architectures"] = [HF_ARCHITECTURES[head]]
  hf_io.write_hf_dir(path, hf_config, hf_tensors(params, config))
