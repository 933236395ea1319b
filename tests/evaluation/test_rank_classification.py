"""Rank classification vs a brute-force reference: one full forward per (example, label), summed by hand."""
import flax.linen as nn
import jax
import numpy as np
import pytest
import scipy.special
import seqio

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.evaluation import rank_classification
from prompt_tuning_jax.models import inputs, t5

T5_TINY = ["t5_config.preset.vocab_size = 64", "t5_config.preset.embed_dim = 16", "t5_config.preset.num_heads = 2",
           "t5_config.preset.head_dim = 8", "t5_config.preset.mlp_dim = 32", "t5_config.preset.num_encoder_layers = 2",
           "t5_config.preset.num_decoder_layers = 2"]
BERT_TINY = ["bert_config.preset.vocab_size = 128", "bert_config.preset.embed_dim = 16", "NUM_LABELS = 3",
             "bert_config.preset.num_heads = 2", "bert_config.preset.head_dim = 8", "bert_config.preset.mlp_dim = 32",
             "bert_config.preset.num_layers = 2"]
PROMPTS = ["PROMPT_LENGTH = 3", "prompts.prompt_factory.num_prompts = 2"]


def build(model_file, bindings, seed=0):
  """A tiny gin-configured model with a prompt bank of 2 -> (model, params ~ N(0, 0.5) from a numpy rng).

  NOTE: params are drawn in numpy on `jax.eval_shape(model.init)`'s shapes: compiling `model.init` costs
  seconds on CPU, and these tests need distinct random weights, not the initialisers'.
  """
  gin_utils.parse_gin([model_file, "methods/prompt_tuning_random.gin"], bindings + PROMPTS)
  model = gin_utils.configured_macro("MODEL")
  args, kwargs = inputs.example_inputs(model)
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *args, **kwargs)["params"])
  rng = np.random.default_rng(seed)
  return model, jax.tree_util.tree_map(lambda s: rng.normal(0.0, 0.5, s.shape).astype(s.dtype), shapes)


def test_label_token_matrix_appends_eos_and_pads():
  vocabulary = seqio.ByteVocabulary()  # byte b -> id b + 3, eos 1, pad 0
  tokens = rank_classification.label_token_matrix(vocabulary, ["ab", "c"])
  np.testing.assert_array_equal(tokens, [[ord("a") + 3, ord("b") + 3, 1], [ord("c") + 3, 1, 0]])
  assert tokens.dtype == np.int32
  assert rank_classification.label_token_matrix(vocabulary, ["c"], length=4).tolist() == [[ord("c") + 3, 1, 0, 0]]
  with pytest.raises(ValueError, match=r"label 'ab' needs 3 target tokens .* length=2"):
    rank_classification.label_token_matrix(vocabulary, ["ab", "c"], length=2)


@pytest.mark.slow
def test_rank_scores_equal_brute_force_forward():
  model, params = build("models/t5_1_1_small.gin", T5_TINY)
  rng = np.random.default_rng(0)
  encoder_tokens = rng.integers(2, 64, (3, 7)).astype(np.int32)
  encoder_tokens[1, 4:], encoder_tokens[2, 6:] = 0, 0  # padded rows
  labels = rng.integers(2, 64, (4, 4)).astype(np.int32)
  for c, length in enumerate((1, 2, 3, 4)):  # label c has `length` tokens, the last one EOS
    labels[c, length - 1], labels[c, length:] = 1, 0
  prompt_index = np.array([0, 1, 1], np.int32)
  scores = np.asarray(rank_classification.rank_scores(model, params, encoder_tokens, labels, prompt_index))
  assert scores.shape == (3, 4)

  forward = jax.jit(lambda enc, dec, index: model.apply({"params": params}, enc, dec, prompt_index=index))
  expected = np.zeros((3, 4))
  for i in range(3):
    for c in range(4):
      logits = np.asarray(forward(encoder_tokens[i:i + 1], t5.shift_right(labels[c:c + 1]), prompt_index[i:i + 1]),
                          np.float64)[0]  # [t, V]
      log_probs = scipy.special.log_softmax(logits, axis=-1)
      expected[i, c] = sum(log_probs[j, labels[c, j]] for j in range(4) if labels[c, j] != 0)
  np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(scores.argmax(-1), expected.argmax(-1))

  normalized = rank_classification.rank_scores(model, params, encoder_tokens, labels, prompt_index,
                                               length_normalize=True)
  np.testing.assert_allclose(np.asarray(normalized) * np.array([1, 2, 3, 4]), scores, rtol=1e-5, atol=1e-5)
  # A different prompt changes the scores: the index reaches the bank.
  other = rank_classification.rank_scores(model, params, encoder_tokens, labels, 1 - prompt_index)
  assert not np.allclose(np.asarray(other), scores)


def test_classifier_scores_are_the_heads_log_softmax():
  model, params = build("models/bert_base.gin", BERT_TINY)
  batch = inputs.example_batch(model, batch_size=3)
  scores = np.asarray(rank_classification.classifier_scores(
      model, params, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], np.array([0, 1, 0])))
  logits = np.asarray(jax.jit(model.apply)({"params": params}, batch["input_ids"], batch["attention_mask"],
                                           batch["token_type_ids"], prompt_index=np.array([0, 1, 0])), np.float64)
  expected = scipy.special.log_softmax(logits, axis=-1)
  np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.exp(scores).sum(-1), 1.0, rtol=1e-5)
  with pytest.raises(ValueError, match="T5 model needs label_tokens"):
    t5_model, t5_params = build("models/t5_1_1_small.gin", T5_TINY)
    rank_classification.score_batch(t5_model, t5_params, {"encoder_input_tokens": np.ones((1, 3), np.int32)})
