"""models/inputs.py's shared helpers: the abstract parameter tree and the features a model reads."""
import flax.linen as nn
import jax
import numpy as np

from prompt_tuning_jax.checkpoints.tree import flatten_params
from prompt_tuning_jax.models import bert, inputs, t5, t5_config
from prompt_tuning_jax.models.bert_config import BertConfig

T5_TINY = t5_config.preset("t5_1_1_small", vocab_size=128, embed_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                           num_encoder_layers=1, num_decoder_layers=1)
BERT_TINY = BertConfig(vocab_size=128, embed_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_layers=1,
                       max_position_embeddings=32, num_labels=3)


def test_abstract_params_are_the_initialised_shapes_unboxed():
  for model in (t5.T5(T5_TINY), bert.BertForSequenceClassification(BERT_TINY)):
    abstract = flatten_params(inputs.abstract_params(model))
    args, kwargs = inputs.example_inputs(model)
    real = flatten_params(nn.meta.unbox(model.init(jax.random.key(0), *args, **kwargs)["params"]))
    assert sorted(abstract) == sorted(real)
    for path, leaf in abstract.items():
      assert isinstance(leaf, jax.ShapeDtypeStruct), (path, type(leaf))  # unboxed: no LogicallyPartitioned
      assert (leaf.shape, leaf.dtype) == (real[path].shape, real[path].dtype), path


def test_model_inputs_keep_what_the_model_reads():
  t5_batch = inputs.example_batch(t5.T5(T5_TINY))
  assert list(inputs.model_inputs(t5_batch)) == ["encoder_input_tokens"]  # no decoder tokens, targets, weights
  bert_batch = inputs.example_batch(bert.BertForTokenClassification(BERT_TINY))
  kept = inputs.model_inputs({**bert_batch, "prompt_index": np.zeros(2, np.int32)})
  assert sorted(kept) == ["attention_mask", "input_ids", "token_type_ids"]  # labels and prompt_index left out
  assert kept["input_ids"] is bert_batch["input_ids"]
  assert set(inputs.MODEL_INPUT_KEYS) == {"encoder_input_tokens", "input_ids", "attention_mask", "token_type_ids"}
