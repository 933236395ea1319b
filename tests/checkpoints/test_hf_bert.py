"""HF BERT safetensors <-> our tree: both name layouts, heads, export round trips and the error messages."""
import json
import os

import numpy as np
import pytest
import transformers
from safetensors.numpy import load_file, save_file

from prompt_tuning_jax.checkpoints import hf_bert
from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.models import bert, bert_config


@pytest.fixture(scope="module")
def minilm(minilm_dir):
  """(config, HF tensors as stored, our params loaded from minilm_dir)."""
  with open(os.path.join(minilm_dir, "config.json")) as f:
    config = bert_config.bert_config_from_hf(json.load(f))
  _, params = hf_bert.load_hf_bert(minilm_dir)
  return config, load_file(os.path.join(minilm_dir, "model.safetensors")), params


def write_dir(path, minilm_dir, tensors):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(minilm_dir, "config.json")) as f, open(os.path.join(path, "config.json"), "w") as g:
    g.write(f.read())
  save_file(tensors, os.path.join(path, "model.safetensors"))
  return str(path)


def assert_trees_equal(a, b):
  flat_a, flat_b = flatten_params(a), flatten_params(b)
  assert sorted(flat_a) == sorted(flat_b)
  for k in flat_a:
    np.testing.assert_array_equal(np.asarray(flat_a[k]), np.asarray(flat_b[k]), err_msg=k)


def test_load_maps_and_transposes(minilm):
  config, tensors, params = minilm
  assert isinstance(config, bert.BertConfig) and config.embed_dim == 384 and config.num_layers == 6
  flat = flatten_params(params)
  np.testing.assert_array_equal(flat["encoder/layers_3/attention/query/kernel"],
                                tensors["encoder.layer.3.attention.self.query.weight"].T)
  np.testing.assert_array_equal(flat["encoder/layers_5/mlp/wo/kernel"], tensors["encoder.layer.5.output.dense.weight"].T)
  np.testing.assert_array_equal(flat["encoder/layers_0/post_mlp_layer_norm/scale"],
                                tensors["encoder.layer.0.output.LayerNorm.weight"])
  np.testing.assert_array_equal(flat["pooler/bias"], tensors["pooler.dense.bias"])
  assert len(flat) == len(tensors) - 1  # every tensor but the position_ids buffer


def test_load_with_bert_prefix_and_legacy_names(minilm, minilm_dir, tmp_path):
  _, tensors, params = minilm
  renamed = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in tensors.items()}
  renamed["cls.predictions.bias"] = np.zeros(30522, np.float32)  # a pretraining head, ignored like transformers
  model, loaded = hf_bert.load_hf_bert(write_dir(tmp_path, minilm_dir, renamed))
  assert isinstance(model, bert.BertModel)
  assert_trees_equal(loaded, params)


@pytest.mark.parametrize("head", ["sequence_classification", "token_classification"])
def test_head_from_base_checkpoint_gets_fresh_classifier(minilm, minilm_dir, head):
  _, _, params = minilm
  model, loaded = hf_bert.load_hf_bert(minilm_dir, head=head, num_labels=7)
  assert isinstance(model, bert.HEADS[head]) and model.config.num_labels == 7
  assert loaded["classifier"]["kernel"].shape == (384, 7) and np.all(loaded["classifier"]["bias"] == 0)
  expected = dict(params) if head == "sequence_classification" else {k: v for k, v in params.items() if k != "pooler"}
  assert_trees_equal(loaded["bert"], expected)


def test_export_round_trip_and_transformers_loads_it(minilm, tmp_path):
  config, tensors, params = minilm
  hf_bert.export_hf_bert(params, config, str(tmp_path))
  _, reloaded = hf_bert.load_hf_bert(str(tmp_path))
  assert_trees_equal(reloaded, params)
  model, info = transformers.BertModel.from_pretrained(str(tmp_path), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
  state = model.state_dict()
  for name, value in tensors.items():
    if name != "embeddings.position_ids":
      np.testing.assert_array_equal(state[name].numpy(), value, err_msg=name)


@pytest.mark.parametrize("head", ["sequence_classification", "token_classification"])
def test_head_export_round_trip(minilm_dir, tmp_path, head):
  model, params = hf_bert.load_hf_bert(minilm_dir, head=head, num_labels=3)
  hf_bert.export_hf_bert(params, model.config, str(tmp_path))
  _, reloaded = hf_bert.load_hf_bert(str(tmp_path), head=head)
  assert_trees_equal(reloaded, params)
  hf_class = getattr(transformers, hf_bert.HF_ARCHITECTURES[head])
  _, info = hf_class.from_pretrained(str(tmp_path), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info


def test_missing_tensor_names_parameter_and_shape(minilm):
  config, tensors, _ = minilm
  tensors = dict(tensors)
  del tensors["encoder.layer.2.intermediate.dense.weight"]
  with pytest.raises(ValueError) as error:
    hf_bert.params_from_hf(config, tensors, source="minilm")
  message = str(error.value)
  assert "encoder.layer.2.intermediate.dense.weight" in message and "encoder/layers_2/mlp/wi/kernel" in message
  assert "(1536, 384)" in message  # the shape as HF stores it (torch Linear: [out, in])


def test_unexpected_tensor_is_named(minilm):
  config, tensors, _ = minilm
  tensors = {**tensors, "encoder.layer.6.output.dense.bias": np.zeros(384, np.float32)}
  with pytest.raises(ValueError, match=r"unexpected tensor encoder\.layer\.6\.output\.dense\.bias \(384,\)"):
    hf_bert.params_from_hf(config, tensors, source="minilm")


def test_wrong_shape_names_parameter_and_both_shapes(minilm):
  config, tensors, _ = minilm
  tensors = {**tensors, "encoder.layer.1.attention.output.LayerNorm.bias": np.zeros(380, np.float32)}
  with pytest.raises(ValueError) as error:
    hf_bert.params_from_hf(config, tensors, source="minilm")
  message = str(error.value)
  assert "encoder.layer.1.attention.output.LayerNorm.bias" in message
  assert "encoder/layers_1/post_attention_layer_norm/bias" in message
  assert "(380,)" in message and "(384,)" in message


def test_wrong_shape_of_transposed_kernel_reports_the_file_shape(minilm):
  config, tensors, _ = minilm
  tensors = {**tensors, "encoder.layer.0.attention.self.query.weight": np.zeros((100, 384), np.float32)}
  with pytest.raises(ValueError) as error:
    hf_bert.params_from_hf(config, tensors, source="minilm")
  assert "(100, 384)" in str(error.value)


def test_unknown_head_is_rejected(minilm_dir):
  with pytest.raises(ValueError, match="head='masked_lm'"):
    hf_bert.load_hf_bert(minilm_dir, head="masked_lm")
