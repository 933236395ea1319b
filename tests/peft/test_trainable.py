"""The trainable mask, split/merge, counts, and the identity of a backbone whose slots are all empty."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.models import bert, bert_config, inputs, slots, t5, t5_config
from prompt_tuning_jax.peft import trainable

T5_CONFIG = t5_config.preset("t5_1_1_small", vocab_size=128, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                             num_encoder_layers=2, num_decoder_layers=2)
BERT_CONFIG = bert_config.preset("bert_base", vocab_size=128, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                                 num_layers=2)

# A hand-made tree with every PEFT module name, and frozen look-alikes that must not match.
TREE = {
    "encoder": {
        "prompt": {"prompt": np.zeros((1, 3, 4))},
        "gpc": {"cell": {"forget_kernel": np.zeros((8, 4))}},
        "layers_0": {
            "attention": {"query": {"kernel": np.zeros((4, 4))}, "lora_query": {"a": np.zeros((4, 2)),
                                                                               "b": np.zeros((2, 4))},
                          "prefix": {"keys": np.zeros((2, 1, 4))}},
            "adapter_mlp": {"down": {"kernel": np.zeros((4, 2))}},
            "mlp": {"wi": {"kernel": np.zeros((4, 8))}, "fl_units": {"wi": np.zeros((4, 5))}},
            "pasta": {"embedding": np.zeros((2, 4))},
            "pre_attention_layer_norm": {"scale": np.zeros((4,))},
        },
        "prompt_like_frozen": {"kernel": np.zeros((2, 2))},  # component is not exactly a PEFT name
    },
    "classifier": {"kernel": np.zeros((4, 2)), "bias": np.zeros((2,))},
    "token_embedder": {"embedding": np.zeros((10, 4))},
}
TRAINED = {"encoder/prompt/prompt", "encoder/gpc/cell/forget_kernel", "encoder/layers_0/attention/lora_query/a",
           "encoder/layers_0/attention/lora_query/b", "encoder/layers_0/attention/prefix/keys",
           "encoder/layers_0/adapter_mlp/down/kernel", "encoder/layers_0/mlp/fl_units/wi",
           "encoder/layers_0/pasta/embedding", "classifier/kernel", "classifier/bias"}


def test_default_mask_selects_exactly_the_peft_modules():
  mask = flatten_params(trainable.trainable_mask(TREE))
  assert {path for path, on in mask.items() if on} == TRAINED
  assert set(mask) == set(flatten_params(TREE))


def test_train_all_and_custom_patterns():
  assert all(flatten_params(trainable.trainable_mask(TREE, train_all=True)).values())
  mask = flatten_params(trainable.trainable_mask(TREE, patterns=r"(^|/)bias$"))  # a single string is one pattern
  assert {p for p, on in mask.items() if on} == {"classifier/bias"}
  with pytest.raises(ValueError, match=r"invalid pattern '\('"):
    trainable.trainable_mask(TREE, patterns=["("])


def test_split_merge_is_an_exact_inverse_with_disjoint_partitions():
  params = jax.tree_util.tree_map(lambda x: np.random.default_rng(0).normal(size=x.shape), TREE)
  mask = trainable.trainable_mask(params)
  trained, frozen = trainable.split(params, mask)
  assert set(flatten_params(trained)) == TRAINED and not set(flatten_params(trained)) & set(flatten_params(frozen))
  merged = trainable.merge(trained, frozen)
  assert jax.tree_util.tree_structure(merged) == jax.tree_util.tree_structure(params)
  jax.tree_util.tree_map(np.testing.assert_array_equal, merged, params)


def test_partition_errors_name_the_paths():
  mask = trainable.trainable_mask(TREE)
  with pytest.raises(ValueError, match="params-only paths.*token_embedder/embedding"):
    trainable.split(TREE, {k: v for k, v in mask.items() if k != "token_embedder"})
  with pytest.raises(ValueError, match="in both partitions.*classifier/bias"):
    trainable.merge(TREE, {"classifier": {"bias": np.zeros(2)}})


def test_counts_and_groups():
  mask = trainable.trainable_mask(TREE)
  by_module = trainable.trainable_by_module(TREE, mask)
  assert by_module == {"adapter_mlp": 8, "classifier": 10, "fl_units": 20, "gpc": 32, "lora_query": 16,
                       "pasta": 8, "prefix": 8, "prompt": 12}
  assert trainable.count(TREE, mask) == sum(by_module.values()) == 114
  assert trainable.count(TREE) == sum(x.size for x in jax.tree_util.tree_leaves(TREE))
  # Outside PEFT modules a leaf is grouped by its own name (BitFit 'bias', full fine-tuning 'kernel').
  assert trainable.module_name("encoder/layers_0/attention/query/bias") == "bias"


def test_mask_and_counts_on_boxed_abstract_params():
  model = t5.T5(T5_CONFIG)
  args, kwargs = inputs.example_inputs(model)
  boxed = jax.eval_shape(model.init, jax.random.key(0), *args, **kwargs)["params"]
  mask = trainable.trainable_mask(boxed)
  assert not any(jax.tree_util.tree_leaves(mask))
  assert trainable.count(boxed) == trainable.count(nn.meta.unbox(boxed)) > 0
  trained, frozen = trainable.split(boxed, trainable.trainable_mask(boxed, train_all=True))
  assert trainable.count(trained) == trainable.count(boxed) and frozen == {}


def _outputs(model, params, args):
  out = model.apply({"params": params}, *args)
  return out if isinstance(out, jax.Array) else out.last_hidden_state


@pytest.mark.parametrize("make", [lambda s: t5.T5(T5_CONFIG, s), lambda s: bert.BertModel(BERT_CONFIG, s),
                                  lambda s: bert.BertForSequenceClassification(BERT_CONFIG, s)],
                         ids=["t5", "bert", "bert_classifier"])
def test_every_slot_empty_is_bit_identical_to_the_base(make):
  empty = slots.Slots(**{f.name: None for f in dataclasses.fields(slots.Slots) if f.name != "backbone"})
  base, with_slots = make(slots.NO_SLOTS), make(empty)
  if isinstance(base, t5.T5):
    args = (jnp.array([[5, 6, 7, 1, 0]]), jnp.array([[0, 9, 10]]))
  else:
    args = (jnp.array([[101, 5, 6, 102, 0]]),)
  base_params = base.init(jax.random.key(0), *args)["params"]
  slot_params = with_slots.init(jax.random.key(0), *args)["params"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, nn.meta.unbox(slot_params), nn.meta.unbox(base_params))
  np.testing.assert_array_equal(_outputs(with_slots, slot_params, args), _outputs(base, base_params, args))


def test_model_gin_without_a_method_is_the_base_model():
  gin_utils.parse_gin(["models/t5_1_1_small.gin"], [f"t5_config.preset.{k} = {v!r}" for k, v in dict(
      vocab_size=128, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64, num_encoder_layers=2,
      num_decoder_layers=2).items()])
  model = gin_utils.configured_macro("MODEL")
  assert model.slots == slots.NO_SLOTS and model.config == T5_CONFIG
