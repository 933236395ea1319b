"""FL-tuning: zero-output init is the base model, the units are a widened FFN, names, counts, errors."""
import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning_jax.models import bert, t5_config
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.models.mlp import MlpBlock
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.models.t5 import T5
from prompt_tuning_jax.peft import fl_tuning

D, F, K = 32, 64, 24
T5_SIZES = dict(vocab_size=128, embed_dim=D, num_heads=4, head_dim=8, mlp_dim=F, num_encoder_layers=2,
                num_decoder_layers=2)
T5_1_1_TINY = t5_config.preset("t5_1_1_small", **T5_SIZES)
T5_1_0_TINY = t5_config.preset("t5_1_0_small", **T5_SIZES)
BERT_TINY = BertConfig(vocab_size=128, embed_dim=D, num_heads=4, head_dim=8, mlp_dim=F, num_layers=2,
                       max_position_embeddings=24)


def fl_slots(backbone="", **options):
  return Slots(mlp_extra=functools.partial(fl_tuning.fl_units_factory, num_units=K, **options), backbone=backbone)


def tokens():
  ids = np.random.default_rng(0).integers(2, 128, (2, 7)).astype(np.int32)
  ids[1, 5:] = 0
  return ids


def without_units(tree):
  """`tree` with every `fl_units` subtree removed (the base model's params)."""
  return {k: without_units(v) if isinstance(v, dict) else v for k, v in tree.items() if k != "fl_units"}


def init(model, *args):
  return nn.meta.unbox(model.init(jax.random.key(0), *args)["params"])


@pytest.mark.parametrize("name", ["t5_1_1", "t5_1_0", "bert"])
def test_zero_output_init_is_the_base_model_exactly(name):
  ids = tokens()
  if name == "bert":
    model_cls, config, args = bert.BertForSequenceClassification, BERT_TINY, (ids,)
  else:
    model_cls, config, args = T5, {"t5_1_1": T5_1_1_TINY, "t5_1_0": T5_1_0_TINY}[name], (ids, ids[:, :3])
  model = model_cls(config, fl_slots(zero_output_init=True))
  params = init(model, *args)
  units = params["bert"]["encoder"]["layers_1"] if name == "bert" else params["decoder"]["layers_1"]
  assert not np.any(units["mlp"]["fl_units"]["wo"]["kernel"])  # Wo' = 0 (and b2' = 0 on BERT)
  np.testing.assert_array_equal(model.apply({"params": params}, *args),
                                model_cls(config).apply({"params": without_units(params)}, *args))


def randomize(tree, seed):
  """Every leaf N(0, 0.3): non-zero biases, and units that clearly matter."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda x: (rng.normal(size=x.shape) * 0.3).astype(np.float32), tree)


@pytest.mark.parametrize("activations,backbone", [(("gelu_tanh", "linear"), "t5"), (("relu",), "t5"),
                                                  (("gelu",), "bert")])
def test_units_are_a_widened_ffn(activations, backbone):
  """FFN(x) + FFN'(x) == an FFN with f + k units: [Wi | Wi'] (and [b1 | b1']), [Wo ; Wo'], bias b2 + b2'."""
  use_bias = backbone == "bert"
  x = np.random.default_rng(1).normal(size=(2, 5, D)).astype(np.float32)
  host = MlpBlock(F, activations, "encoder/mlp", use_bias=use_bias, slots=fl_slots(backbone))
  params = randomize(init(host, x), seed=2)
  units = params["fl_units"]
  wide = {name: {"kernel": np.concatenate([params[name]["kernel"], units[name]["kernel"]],
                                          axis=0 if name == "wo" else 1)} for name in units}
  if use_bias:
    wide["wi"]["bias"] = np.concatenate([params["wi"]["bias"], units["wi"]["bias"]])
    wide["wo"]["bias"] = params["wo"]["bias"] + units["wo"]["bias"]  # b2 + b2' (the official extra bias)
  expected = MlpBlock(F + K, activations, "encoder/mlp", use_bias=use_bias).apply({"params": wide}, x)
  out = host.apply({"params": params}, x)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  base = MlpBlock(F, activations, "encoder/mlp", use_bias=use_bias).apply({"params": without_units(params)}, x)
  assert np.abs(out - base).max() > 1e-2  # the units do contribute


def test_parameter_names_init_and_stacks():
  ids = tokens()
  params = init(T5(T5_1_1_TINY, fl_slots()), ids, ids[:, :3])
  for stack in ("encoder", "decoder"):
    units = params[stack]["layers_0"]["mlp"]["fl_units"]
    assert {k: v["kernel"].shape for k, v in units.items()} == {"wi_0": (D, K), "wi_1": (D, K), "wo": (K, D)}
    assert 0 < np.abs(units["wo"]["kernel"]).max() <= 2 * 0.02 + 1e-7  # truncated normal, std 0.02
  encoder_only = init(T5(T5_1_1_TINY, fl_slots(stacks=("encoder",))), ids, ids[:, :3])
  assert "fl_units" in encoder_only["encoder"]["layers_1"]["mlp"]
  assert "fl_units" not in encoder_only["decoder"]["layers_1"]["mlp"]
  bert_units = init(bert.BertModel(BERT_TINY, fl_slots()), ids)["encoder"]["layers_0"]["mlp"]["fl_units"]
  assert {k: {n: a.shape for n, a in v.items()} for k, v in bert_units.items()} == {
      "wi": {"kernel": (D, K), "bias": (K,)}, "wo": {"kernel": (K, D), "bias": (D,)}}
  scanned = jax.eval_shape(T5(T5_1_1_TINY.replace(scan_layers=True), fl_slots()).init, jax.random.key(0),
                           ids, ids[:, :3])["params"]
  assert scanned["encoder"]["layers"]["mlp"]["fl_units"]["wo"]["kernel"].value.shape == (2, K, D)


def test_unit_activations_override_and_intermediate_dropout():
  x = np.random.default_rng(3).normal(size=(2, 5, D)).astype(np.float32)
  make = functools.partial(fl_tuning.fl_units_factory, where="encoder/mlp", backbone="t5", embed_dim=D,
                           activations=("gelu_tanh", "linear"), num_units=K)
  relu_units = make(unit_activations=("relu",))
  params = init(relu_units, x)
  assert set(params) == {"wi", "wo"}
  np.testing.assert_allclose(relu_units.apply({"params": params}, x),
                             np.maximum(x @ params["wi"]["kernel"], 0) @ params["wo"]["kernel"], rtol=1e-5, atol=1e-6)
  dropped = make(intermediate_dropout_rate=0.5)
  params = init(dropped, x)
  train = dropped.apply({"params": params}, x, deterministic=False, rngs={"dropout": jax.random.key(4)})
  assert not np.allclose(train, dropped.apply({"params": params}, x))


@pytest.mark.parametrize("files,bindings,expected", [
    (["models/t5_1_1_base.gin"], [], {"fl_units": 3 * 768 * 160 * 24}),                        # 8,847,360
    (["models/t5_1_1_base.gin"], ["fl_tuning.fl_units_factory.stacks = ('encoder',)"], {"fl_units": 4_423_680}),
    (["models/t5_1_0_base.gin"], [], {"fl_units": 5_898_240}),
    (["models/bert_base.gin"], [], {"fl_units": 2_960_256, "classifier": 1_538}),
])
def test_counts(files, bindings, expected, parameter_report):
  report = parameter_report(files + ["methods/fl_tuning.gin"], bindings)
  assert report["trainable_by_module"] == expected


def test_bad_options_are_named():
  make = functools.partial(fl_tuning.fl_units_factory, where="encoder/mlp", backbone="t5", embed_dim=D,
                           activations=("relu",))
  with pytest.raises(ValueError, match=r"stacks=\('encoder', 'decoders'\) has unknown \['decoders'\]"):
    make(stacks=("encoder", "decoders"))
  with pytest.raises(ValueError, match="num_units=0; expected at least 1"):
    make(num_units=0)
  assert make(where="decoder/mlp", stacks=("encoder",)) is None
