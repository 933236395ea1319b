"""Collapse diagnostics: the features' spread at evaluation and the PEFT modules' norms in training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.evaluation import diagnostics
from prompt_tuning_jax.models import bert
from prompt_tuning_jax.peft import diagnostics as peft_diagnostics

TINY = bert.BertConfig(vocab_size=97, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=48, num_layers=2,
                       max_position_embeddings=24, num_labels=2)


def test_feature_spread_is_the_mean_pairwise_cosine():
  features = np.random.default_rng(0).normal(size=(7, 5))
  unit = features / np.linalg.norm(features, axis=-1, keepdims=True)
  cosines = unit @ unit.T
  spread = diagnostics.feature_spread(features)
  np.testing.assert_allclose(spread["feature_cosine"], cosines[~np.eye(7, dtype=bool)].mean(), rtol=1e-10)
  np.testing.assert_allclose(spread["feature_norm"], np.linalg.norm(features, axis=-1).mean(), rtol=1e-12)
  collapsed = np.ones((4, 3)) + 1e-9 * np.arange(12).reshape(4, 3)
  assert diagnostics.feature_spread(collapsed)["feature_cosine"] == pytest.approx(1.0, abs=1e-9)
  with pytest.raises(ValueError, match="at least 2 rows.*\\(1, 3\\)"):
    diagnostics.feature_spread(np.ones((1, 3)))


@pytest.mark.slow
def test_evaluation_features_are_the_real_rows_of_the_batches():
  model = bert.BertForSequenceClassification(TINY, pooling="cls")
  ids = np.random.default_rng(1).integers(1, 97, (6, 8)).astype(np.int32)
  params = model.init(jax.random.key(0), ids)["params"]
  batches = [{"input_ids": ids[:4], "attention_mask": np.ones((4, 8), np.int32)},
             {"input_ids": ids[4:], "attention_mask": np.ones((2, 8), np.int32)}]
  expected = model.apply({"params": params}, ids, method="features")
  np.testing.assert_allclose(diagnostics.evaluation_features(model, params, batches, num_examples=5),
                             expected[:5], rtol=1e-5, atol=1e-6)  # row 5 stands for a padding copy
  assert diagnostics.evaluation_features(model, params, batches, 5, max_examples=3).shape == (3, TINY.embed_dim)
  assert diagnostics.has_features(model) and not diagnostics.has_features(bert.BertForTokenClassification(TINY))


def test_module_norms_group_peft_modules_and_give_the_prompt_row_norm():
  bank = jnp.stack([jnp.full((3, 4), 0.5), jnp.full((3, 4), 1.0)])  # rows of norm 1 and 2
  trainable = {"encoder": {"prompt": {"prompt": bank}},
               "layers_0": {"lora_query": {"a": jnp.full((2,), 3.0)}}, "layers_1": {"lora_query": {"a": jnp.full((2,), 4.0)}},
               "classifier": {"kernel": jnp.ones((2, 2))}, "layers_2": {"mlp": {"wi": {"bias": jnp.ones(5)}}}}
  norms = peft_diagnostics.module_norms(trainable)
  assert set(norms) == {"norm/prompt", "norm/lora_query", "norm/classifier", "prompt_row_norm"}  # no BitFit bias
  np.testing.assert_allclose(norms["norm/lora_query"], np.sqrt(2 * 9 + 2 * 16), rtol=1e-6)
  np.testing.assert_allclose(norms["norm/prompt"], np.sqrt(12 * 0.25 + 12 * 1.0), rtol=1e-6)
  np.testing.assert_allclose(norms["prompt_row_norm"], 1.5, rtol=1e-6)
  np.testing.assert_allclose(norms["norm/classifier"], 2.0, rtol=1e-6)
