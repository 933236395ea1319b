"""LoRA (peft/lora.py): y = x W + s·x A B against merged kernels and einsum, exact identity at init, counts."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.models import bert, t5_config
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.models.t5 import T5
from prompt_tuning_jax.peft import lora

T5_TINY = t5_config.preset("t5_1_1_small", vocab_size=128, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                           num_encoder_layers=2, num_decoder_layers=2)
BERT_TINY = BertConfig(vocab_size=97, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=48, num_layers=2,
                       max_position_embeddings=24)
RANK, ALPHA = 4, 12.0


def setup(backbone, targets):
  """(model with LoRA on `targets`, base model, token args)."""
  tokens = np.random.default_rng(0).integers(2, 90, (2, 7)).astype(np.int32)
  tokens[1, 5:] = 0
  slots = Slots(projection_delta=functools.partial(lora.lora_factory, rank=RANK, alpha=ALPHA, targets=targets))
  if backbone == "t5":
    return T5(T5_TINY, slots), T5(T5_TINY), (tokens, tokens[:, :4])
  return bert.BertForSequenceClassification(BERT_TINY, slots), bert.BertForSequenceClassification(BERT_TINY), (tokens,)


def init(model, *args):
  return nn.meta.unbox(model.init(jax.random.key(0), *args)["params"])


def merge_and_strip(tree):
  """Independent reference: kernel <- kernel + (alpha / r) A B for every lora_<name> sibling; LoRA removed."""
  out = {}
  for name, value in tree.items():
    if name.startswith("lora_"):
      continue
    if isinstance(value, dict):
      value = merge_and_strip(value)
      if f"lora_{name}" in tree:
        delta = tree[f"lora_{name}"]
        value = {**value, "kernel": value["kernel"] + ALPHA / RANK * np.einsum("ir,ro->io", delta["a"], delta["b"])}
    out[name] = value
  return out


def strip(tree):
  return {k: strip(v) if isinstance(v, dict) else v for k, v in tree.items() if not k.startswith("lora_")}


@pytest.mark.parametrize("backbone,targets", [
    ("t5", ("query", "key", "value", "out", "wi_0", "wi_1", "wo")),
    ("bert", ("query", "value", "wi", "wo")),
])
def test_every_target_is_x_w_plus_scaled_x_a_b(backbone, targets):
  model, base, args = setup(backbone, targets)
  params = init(model, *args)
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map_with_path(  # B starts at zero; draw it so the path contributes
      lambda path, x: rng.normal(size=x.shape).astype(np.float32) * 0.2 if path[-1].key == "b" else x, params)
  found = {k[-2].key for k, _ in jax.tree_util.tree_flatten_with_path(params)[0] if k[-1].key == "a"}
  assert found == {f"lora_{t}" for t in targets}
  expected = base.apply({"params": merge_and_strip(params)}, *args)
  got = model.apply({"params": params}, *args)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  assert not np.allclose(got, base.apply({"params": strip(params)}, *args), atol=1e-3)  # LoRA did act


def test_module_matches_einsum():
  x = np.random.default_rng(0).normal(size=(2, 3, 10)).astype(np.float32)
  module = lora.LoRA(RANK, ALPHA, 6, ("embed", "joined_kv"))
  params = init(module, x)
  params["b"] = np.random.default_rng(1).normal(size=(RANK, 6)).astype(np.float32)
  expected = np.einsum("bld,dr,ro->blo", x, params["a"], params["b"]) * ALPHA / RANK
  np.testing.assert_allclose(module.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)
  dropped = lora.LoRA(RANK, ALPHA, 6, ("embed", "joined_kv"), dropout_rate=0.5)
  eval_out = dropped.apply({"params": params}, x)  # no dropout rng: deterministic (slot contract NOTE)
  np.testing.assert_array_equal(eval_out, module.apply({"params": params}, x))
  assert not np.allclose(dropped.apply({"params": params}, x, rngs={"dropout": jax.random.key(2)}), eval_out)
  np.testing.assert_array_equal(dropped.apply({"params": params}, x, deterministic=True,
                                              rngs={"dropout": jax.random.key(2)}), eval_out)


@pytest.mark.parametrize("backbone", ["t5", "bert"])
def test_zero_b_is_the_base_model_exactly(backbone):
  model, base, args = setup(backbone, ("query", "value", "wo"))
  params = init(model, *args)
  np.testing.assert_array_equal(model.apply({"params": params}, *args), base.apply({"params": strip(params)}, *args))


def test_init_shapes_and_axes():
  x = jnp.ones((1, 2, 512))
  boxed = jax.eval_shape(lora.LoRA(8, 16.0, 384, ("embed", "joined_kv")).init, jax.random.key(0), x)["params"]
  assert boxed["a"].names == ("embed", "lora_rank") and boxed["b"].names == ("lora_rank", "joined_kv")
  params = init(lora.LoRA(8, 16.0, 384, ("mlp", "embed")), x)
  assert params["a"].shape == (512, 8) and params["b"].shape == (8, 384) and not np.any(params["b"])
  bound = 1 / np.sqrt(512)  # PyTorch kaiming_uniform_(a=sqrt(5)) on A [r, in]
  assert 0.95 * bound < np.abs(params["a"]).max() <= bound
  bert_init = init(lora.LoRA(8, 16.0, 384, ("mlp", "embed"), init_scheme="bert"), x)
  assert abs(float(np.std(bert_init["b"])) - 0.02) < 3e-3


def test_factory_selects_targets_and_names_errors():
  make = functools.partial(lora.lora_factory, where="encoder/attention", backbone="t5", in_features=8,
                           out_features=8)
  assert make(target="query").name == "lora_query" and make(target="key") is None
  assert make(target="wo", targets=("wi_0", "wo")).kernel_axes == ("mlp", "embed")
  with pytest.raises(ValueError, match=r"targets=\('query', 'v'\) has unknown \['v'\]; known: \['key', 'out'"):
    make(target="query", targets=("query", "v"))
  with pytest.raises(ValueError, match="LoRA rank=0; expected at least 1"):
    make(target="query", rank=0)
  with pytest.raises(ValueError, match=r"LoRA init='kaiming'; known: \['bert', 'lora'\]"):
    make(target="query", init="kaiming")


def test_counts_base_models(parameter_report):
  d, f, r = 768, 2048, 8
  t5 = parameter_report(["models/t5_1_1_base.gin", "methods/lora.gin"])["trainable_by_module"]
  assert t5 == {"lora_query": 36 * 2 * r * d, "lora_value": 36 * 2 * r * d}
  assert sum(t5.values()) == 36 * 4 * r * d == 884_736  # 4·r·d per attention sublayer (§D(3))
  report = parameter_report(["models/bert_base.gin", "methods/lora.gin"])
  assert report["trainable_by_module"] == {"lora_query": 12 * 2 * r * d, "lora_value": 12 * 2 * r * d,
                                           "classifier": 1_538}
  r = 102  # LoRA-ffn on T5 1.1: wi_0, wi_1, wo, 3·r·(d + f) per FFN (§D(8))
  ffn = parameter_report(["models/t5_1_1_base.gin", "methods/lora_ffn.gin"])["trainable_by_module"]
  assert ffn == {name: 24 * r * (d + f) for name in ("lora_wi_0", "lora_wi_1", "lora_wo")}
  assert sum(ffn.values()) == 20_680_704
