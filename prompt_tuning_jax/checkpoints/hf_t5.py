"""Hugging Face T5 (T5ForConditionalGeneration safetensors) <-> our t5x-named parameter tree.

HF stores torch Linear weights as [out, in]; ours are [in, out]. The relative position bias lives in
HF's block 0 as [buckets, heads]; ours is the stack's `relpos_bias/rel_embedding` [heads, buckets].
HF may store the input embedding three times (`shared`, `encoder.embed_tokens`, `decoder.embed_tokens`);
we keep one table and check that any copies agree.
"""
from typing import Any

import numpy as np

from prompt_tuning_jax.checkpoints import hf_io
from prompt_tuning_jax.models.t5 import T5
from prompt_tuning_jax.models.t5_config import T5Config

EMBEDDING_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_ATTENTION = {"query": "q", "key": "k", "value": "v", "out": "o"}


def t5_config_from_hf(hf: dict[str, Any]) -> T5Config:
  """Builds our config from a HF T5 config.json dict (T5 1.0, 1.1, LM-adapted, mT5)."""
  projection = hf.get("feed_forward_proj", "relu")
  gated = projection.startswith("gated-")
  act = projection.split("-")[-1]
  act = {"gelu": "gelu_tanh", "gelu_new": "gelu_tanh"}.get(act, act)
  return T5Config(
      vocab_size=hf["vocab_size"], embed_dim=hf["d_model"], num_heads=hf["num_heads"], head_dim=hf["d_kv"],
      mlp_dim=hf["d_ff"], num_encoder_layers=hf["num_layers"],
      num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
      mlp_activations=(act, "linear") if gated else (act,),
      logits_via_embedding=hf.get("tie_word_embeddings", True) is not False,
      relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
      relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
      layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6))


def hf_config_from_t5(config: T5Config) -> dict[str, Any]:
  """The HF config.json dict for our config."""
  gated = len(config.mlp_activations) == 2
  act = {"gelu_tanh": "gelu"}.get(config.mlp_activations[0], config.mlp_activations[0])
  return {
      "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
      "vocab_size": config.vocab_size, "d_model": config.embed_dim, "d_kv": config.head_dim,
      "d_ff": config.mlp_dim, "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers, "num_heads": config.num_heads,
      "relative_attention_num_buckets": config.relative_attention_num_buckets,
      "relative_attention_max_distance": config.relative_attention_max_distance,
      "dropout_rate": config.dropout_rate, "layer_norm_epsilon": config.layer_norm_epsilon,
      "feed_forward_proj": f"gated-{act}" if gated else act,
      "tie_word_embeddings": config.logits_via_embedding, "is_encoder_decoder": True,
      "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
  }


def name_map(config: T5Config) -> dict[str, tuple[str, bool]]:
  """Our '/'-joined parameter path -> (HF name, transpose?) for an unscanned tree."""
  names = {"token_embedder/embedding": ("shared.weight", False)}
  mlp = ["wi"] if len(config.mlp_activations) == 1 else [f"wi_{i}" for i in range(len(config.mlp_activations))]
  stacks = [("encoder", config.num_encoder_layers, [("attention", "SelfAttention")],
             ["pre_attention_layer_norm", "pre_mlp_layer_norm"]),
            ("decoder", config.num_decoder_layers,
             [("self_attention", "SelfAttention"), ("encoder_decoder_attention", "EncDecAttention")],
             ["pre_self_attention_layer_norm", "pre_cross_attention_layer_norm", "pre_mlp_layer_norm"])]
  for stack, num_layers, attentions, norms in stacks:
    names[f"{stack}/relpos_bias/rel_embedding"] = (
        f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True)
    names[f"{stack}/{stack}_norm/scale"] = (f"{stack}.final_layer_norm.weight", False)
    for i in range(num_layers):
      ours, theirs = f"{stack}/layers_{i}", f"{stack}.block.{i}.layer"
      for sub, (attention, hf_attention) in enumerate(attentions):
        for proj, hf_proj in _ATTENTION.items():
          names[f"{ours}/{attention}/{proj}/kernel"] = (f"{theirs}.{sub}.{hf_attention}.{hf_proj}.weight", True)
      for sub, norm in enumerate(norms):
        names[f"{ours}/{norm}/scale"] = (f"{theirs}.{sub}.layer_norm.weight", False)
      for kernel in mlp + ["wo"]:
        names[f"{ours}/mlp/{kernel}/kernel"] = (f"{theirs}.{len(norms) - 1}.DenseReluDense.{kernel}.weight", True)
  if not config.logits_via_embedding:
    names["decoder/logits_dense/kernel"] = ("lm_head.weight", True)
  return names


def params_from_hf(config: T5Config, tensors: dict[str, np.ndarray], source: str = "<tensors>") -> dict:
  """HF-named tensors -> our nested params (checked against the model's abstract shapes)."""
  tensors = dict(tensors)
  for alias in EMBEDDING_ALIASES:
    if alias in tensors and "shared.weight" in tensors and not np.array_equal(tensors[alias], tensors["shared.weight"]):
      raise ValueError(f"{source}: {alias} differs from shared.weight; this T5 keeps one input embedding")
    if alias in tensors:
      tensors.setdefault("shared.weight", tensors[alias])
      del tensors[alias]
  if config.logits_via_embedding:
    tensors.pop("lm_head.weight", None)  # a tied head saved as its own tensor
  return hf_io.params_from_tensors(hf_io.abstract_params(T5(config), *_example_inputs()), name_map(config),
                                   tensors, source)


def load_hf_t5(path: str) -> tuple[T5, dict]:
  """Reads a HF T5 directory (config.json + model.safetensors) -> (model, params)."""
  hf_config, tensors = hf_io.read_hf_dir(path)
  config = t5_config_from_hf(hf_config)
  return T5(config), params_from_hf(config, tensors, path)


def hf_tensors(params: dict, config: T5Config) -> dict[str, np.ndarray]:
  """Our params -> HF-named float32 tensors; the input embedding is written under every alias."""
  tensors = hf_io.tensors_from_params(params, name_map(config))
  for alias in EMBEDDING_ALIASES:
    tensors[alias] = tensors["shared.weight"]
  return tensors


def export_hf_t5(params: dict, config: T5Config, path: str) -> None:
  """Writes config.json + model.safetensors that `load_hf_t5` (and transformers) read back."""
  hf_io.write_hf_dir(path, hf_config_from_t5(config), hf_tensors(params, config))


def to_transformers(params: dict, config: T5Config):
  """A transformers `T5ForConditionalGeneration` (torch, eval mode) holding our weights.

  NOTE: in transformers 5.x `T5Config(tie_word_embeddings=False)` only switches off the output rescale
  and keeps the head tied; setting the flag afterwards unties the head *and* the two input embeddings.
  We set it afterwards, load the one shared table and tie both stacks' input embeddings back to it, which is
  exactly T5 1.1 (one table, so training it in torch updates one table, as ours).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  hf_config = transformers.T5Config(**hf_config_from_t5(config))
  if not config.logits_via_embedding:
    hf_config.tie_word_embeddings = False
  model = transformers.T5ForConditionalGeneration(hf_config).eval()
  state = {k: torch.from_numpy(np.array(v)) for k, v in hf_tensors(params, config).items()}
  if config.logits_via_embedding:
    state["lm_head.weight"] = state["shared.weight"]
  missing, unexpected = model.load_state_dict(state, strict=False)
  if missing or unexpected:
    raise ValueError(f"transformers T5 vs our export: missing {missing}, unexpected {unexpected}")
  model.set_input_embeddings(model.shared)  # encoder and decoder embed_tokens are `shared` again
  return model


def _example_inputs():
  return np.ones((1, 4), np.int32), np.ones((1, 2), np.int32)

