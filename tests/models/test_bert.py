"""BERT against transformers' PyTorch BertModel on the real MiniLM weights, plus structure, heads and slots."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from prompt_tuning_jax.checkpoints.hf_bert import load_hf_bert
from prompt_tuning_jax.models import bert, bert_config
from prompt_tuning_jax.models.slots import Slots

TINY = bert.BertConfig(vocab_size=97, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=48, num_layers=2,
                       max_position_embeddings=24, num_labels=5)
SINGLES = ["Hello world.", "Prompt tuning trains a few soft tokens and keeps the whole backbone frozen.",
           "A medium sentence, with punctuation!"]
PAIRS = (["Is the sky blue?", "Who wrote this code?", "Short."],
         ["Yes, on a clear day the sky looks blue to most people.", "Several engineers.", "Another short one."])


@pytest.fixture(scope="module")
def minilm(minilm_dir):
  model, params = load_hf_bert(minilm_dir)
  reference = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
  tokenizer = transformers.BertTokenizerFast(vocab_file=os.path.join(minilm_dir, "vocab.txt"))
  return model, params, reference, tokenizer


def compare(minilm, *texts):
  model, params, reference, tokenizer = minilm
  batch = tokenizer(*texts, padding=True, return_tensors="np")
  assert not batch["attention_mask"].all(), "the batch should contain padding"
  ours = jax.jit(model.apply)({"params": params}, batch["input_ids"], batch["attention_mask"],
                              batch["token_type_ids"])
  with torch.no_grad():
    theirs = reference(**{k: torch.from_numpy(v) for k, v in batch.items()})
  real = batch["attention_mask"].astype(bool)
  hidden_ours, hidden_theirs = np.asarray(ours.last_hidden_state)[real], theirs.last_hidden_state.numpy()[real]
  pooled_ours, pooled_theirs = np.asarray(ours.pooler_output), theirs.pooler_output.numpy()
  print(f"max |diff| last_hidden_state {np.abs(hidden_ours - hidden_theirs).max():.2e}, "
        f"pooler_output {np.abs(pooled_ours - pooled_theirs).max():.2e}")
  np.testing.assert_allclose(hidden_ours, hidden_theirs, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(pooled_ours, pooled_theirs, atol=1e-4, rtol=1e-4)
  return batch


def test_matches_transformers_on_single_sentences(minilm):
  batch = compare(minilm, SINGLES)
  assert len(set(batch["attention_mask"].sum(-1))) == len(SINGLES)  # three different lengths


def test_matches_transformers_on_sentence_pairs(minilm):
  batch = compare(minilm, *PAIRS)
  assert batch["token_type_ids"].any()


@pytest.mark.slow
def test_sequence_classifier_computes_only_the_cls_row_of_the_last_layer(minilm, minilm_dir):
  """cls_only (what BertForSequenceClassification uses) pools the same row as the full last layer, with fewer
  FLOPs, and the classifier matches transformers' BertForSequenceClassification on the real MiniLM."""
  model, params, _, tokenizer = minilm
  batch = tokenizer(*PAIRS, padding=True, return_tensors="np")
  args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
  apply = lambda cls_only: model.apply({"params": params}, *args, cls_only=cls_only)
  full, cls = apply(False), apply(True)
  assert cls.last_hidden_state.shape == (3, 1, full.last_hidden_state.shape[-1])
  np.testing.assert_allclose(cls.last_hidden_state[:, 0], full.last_hidden_state[:, 0], atol=1e-6, rtol=1e-6)
  np.testing.assert_allclose(cls.pooler_output, full.pooler_output, atol=1e-6, rtol=1e-6)
  flops = lambda cls_only: jax.jit(lambda p: model.apply({"params": p}, *args, cls_only=cls_only)).lower(
      params).compile().cost_analysis()["flops"]
  assert flops(True) < 0.95 * flops(False)

  head = bert.BertForSequenceClassification(model.config.replace(num_labels=3))
  classifier = {"kernel": np.random.default_rng(0).normal(0, 0.02, (model.config.embed_dim, 3)).astype(np.float32),
                "bias": np.zeros(3, np.float32)}
  ours = head.apply({"params": {"bert": params, "classifier": classifier}}, *args)
  reference = transformers.BertForSequenceClassification.from_pretrained(
      minilm_dir, num_labels=3, attn_implementation="eager").eval()
  with torch.no_grad():
    reference.classifier.weight.copy_(torch.from_numpy(classifier["kernel"].T))
    reference.classifier.bias.zero_()
    theirs = reference(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-4)


def test_token_classifier_matches_transformers(minilm, minilm_dir):
  """BertForTokenClassification (no pooler, a classifier on every row) against transformers' on the real MiniLM;
  padded rows are not compared (neither side masks them)."""
  model, params, _, tokenizer = minilm
  batch = tokenizer(*PAIRS, padding=True, return_tensors="np")
  head = bert.BertForTokenClassification(model.config.replace(num_labels=5))
  rng = np.random.default_rng(1)
  classifier = {"kernel": rng.normal(0, 0.02, (model.config.embed_dim, 5)).astype(np.float32),
                "bias": rng.normal(0, 0.1, 5).astype(np.float32)}
  base = {k: v for k, v in params.items() if k != "pooler"}
  ours = np.asarray(head.apply({"params": {"bert": base, "classifier": classifier}}, batch["input_ids"],
                               batch["attention_mask"], batch["token_type_ids"]))
  reference = transformers.BertForTokenClassification.from_pretrained(
      minilm_dir, num_labels=5, attn_implementation="eager").eval()
  with torch.no_grad():
    reference.classifier.weight.copy_(torch.from_numpy(classifier["kernel"].T))
    reference.classifier.bias.copy_(torch.from_numpy(classifier["bias"]))
    theirs = reference(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
  assert ours.shape == theirs.shape == batch["input_ids"].shape + (5,)
  real = batch["attention_mask"].astype(bool)
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-5, rtol=1e-4)


def test_default_mask_is_non_pad_tokens(minilm):
  model, params, _, tokenizer = minilm
  batch = tokenizer(SINGLES, padding=True, return_tensors="np")
  explicit = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"])
  default = model.apply({"params": params}, batch["input_ids"])
  np.testing.assert_array_equal(explicit.last_hidden_state, default.last_hidden_state)


def abstract_params(model, config):
  ids = jnp.ones((1, 4), jnp.int32)
  return jax.eval_shape(model(config).init, jax.random.key(0), ids)["params"]


@pytest.mark.parametrize("config, expected", [(bert_config.BERT_BASE, 109_482_240), (bert_config.BERT_LARGE, 335_141_888)])
def test_parameter_count(config, expected):
  params = nn.meta.unbox(abstract_params(bert.BertModel, config))
  assert sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params)) == expected


def test_every_parameter_has_logical_axes():
  boxed = abstract_params(bert.BertForSequenceClassification, TINY)
  specs = nn.get_partition_spec(boxed)
  flat = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  for path, spec in flat:
    assert spec and all(isinstance(name, str) for name in spec), (jax.tree_util.keystr(path), spec)
  assert specs["classifier"]["kernel"] == jax.sharding.PartitionSpec("embed", "labels")
  assert specs["bert"]["embeddings"]["position_embeddings"]["embedding"] == jax.sharding.PartitionSpec(
      "positions", "embed")


def tiny_batch(b=3, l=9):
  ids = np.random.default_rng(0).integers(1, TINY.vocab_size, (b, l)).astype(np.int32)
  ids[1, 5:] = 0
  return ids, (ids != 0).astype(np.int32), np.zeros_like(ids)


@pytest.mark.parametrize("head, shape", [("sequence_classification", (3, 5)),
                                         ("token_classification", (3, 9, 5))])
def test_heads_give_logits(head, shape):
  model = bert.HEADS[head](TINY)
  batch = tiny_batch()
  params = model.init(jax.random.key(0), *batch)["params"]
  assert set(params) == {"bert", "classifier"}
  assert ("pooler" in params["bert"]) == (head == "sequence_classification")  # HF has no pooler for tokens
  logits = model.apply({"params": params}, *batch)
  assert logits.shape == shape and logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())


def test_poolings_read_the_features_they_name_and_share_one_parameter_tree():
  batch = tiny_batch()
  base = bert.BertModel(TINY)
  heads = {p: bert.BertForSequenceClassification(TINY, pooling=p) for p in bert.POOLINGS}
  params = nn.meta.unbox(heads["pooler"].init(jax.random.key(0), *batch)["params"])
  for pooling, head in heads.items():  # every pooling has the pooler (HF checkpoints carry it)
    assert jax.tree_util.tree_structure(nn.meta.unbox(head.init(jax.random.key(0), *batch)["params"])) == \
        jax.tree_util.tree_structure(params), pooling
  out = base.apply({"params": params["bert"]}, *batch)
  real = batch[1].astype(np.float32)[..., None]
  expected = {"pooler": out.pooler_output, "cls": out.last_hidden_state[:, 0],
              "mean": (out.last_hidden_state * real).sum(1) / real.sum(1)}
  for pooling, head in heads.items():
    features = head.apply({"params": params}, *batch, method="features")
    np.testing.assert_allclose(features, expected[pooling], rtol=1e-5, atol=1e-6, err_msg=pooling)
    kernel, bias = params["classifier"]["kernel"], params["classifier"]["bias"]
    np.testing.assert_allclose(head.apply({"params": params}, *batch), features @ kernel + bias, rtol=1e-5,
                               atol=1e-6, err_msg=pooling)
  assert not np.allclose(expected["cls"], expected["mean"])
  _, sown = heads["mean"].apply({"params": params}, *batch, mutable=["intermediates"])
  np.testing.assert_array_equal(sown["intermediates"]["features"][0], expected["mean"])
  with pytest.raises(ValueError, match="pooling='max'.*'pooler', 'cls', 'mean'"):
    bert.BertForSequenceClassification(TINY, pooling="max").init(jax.random.key(0), *batch)


@pytest.mark.slow
def test_dropout_path():
  model = bert.BertForSequenceClassification(TINY)
  batch = tiny_batch()
  params = model.init(jax.random.key(0), *batch)["params"]
  run = lambda seed: model.apply({"params": params}, *batch, enable_dropout=True,
                                 rngs={"dropout": jax.random.key(seed)})
  base = model.apply({"params": params}, *batch)
  assert bool(jnp.isfinite(run(1)).all())
  assert not np.allclose(run(1), base) and not np.allclose(run(1), run(2))
  np.testing.assert_array_equal(run(1), run(1))


def test_slots_are_called_where_expected_and_identity_is_exact(identity_slots):
  slots, calls = identity_slots
  batch = tiny_batch()
  base = bert.BertModel(TINY)
  params = base.init(jax.random.key(0), *batch)["params"]
  hooked = bert.BertModel(TINY, slots)
  out_base = base.apply({"params": params}, *batch)
  calls.clear()
  out_hooked = hooked.apply({"params": params}, *batch)
  np.testing.assert_array_equal(out_base.last_hidden_state, out_hooked.last_hidden_state)
  np.testing.assert_array_equal(out_base.pooler_output, out_hooked.pooler_output)
  assert sorted(set(calls), key=str) == sorted([
      ("input_transform", "encoder", "bert", None),
      ("layer_input_hook", "encoder", "bert", None),
      *[("projection_delta", "encoder/attention", "bert", t) for t in ("query", "key", "value", "out")],
      ("projection_delta", "encoder/mlp", "bert", "wi"), ("projection_delta", "encoder/mlp", "bert", "wo"),
      ("attention_head_adapter", "encoder/attention", "bert", None),
      ("mlp_extra", "encoder/mlp", "bert", None),
      ("post_attention_adapter", "encoder/attention", "bert", None),
      ("post_mlp_adapter", "encoder/mlp", "bert", None)], key=str)
  assert sum(call[0] == "post_mlp_adapter" for call in calls) == TINY.num_layers


class _Prompt(nn.Module):
  """A minimal prompt bank: row prompt_index (default 0) of [2, p, d] goes before the inputs, always attended;
  `token_rows` drops its rows from per-row outputs (models/slots.py)."""
  length: int

  def token_rows(self, outputs):
    return outputs[:, self.length:]

  @nn.compact
  def __call__(self, embedded, mask, tokens, *, prompt_index, deterministic):
    bank = self.param("prompt", nn.initializers.normal(1.0), (2, self.length, embedded.shape[-1]))
    index = jnp.zeros(embedded.shape[0], jnp.int32) if prompt_index is None else prompt_index
    prompt = bank[index]  # [b, p, d]
    return (jnp.concatenate([prompt, embedded], axis=1),
            jnp.concatenate([jnp.ones((mask.shape[0], self.length), bool), mask], axis=1))


@pytest.mark.parametrize("head", [None, "sequence_classification", "token_classification"])
def test_input_transform_adds_prompts_and_sees_prompt_index(head):
  slots = Slots(input_transform=lambda where, backbone, embed_dim: _Prompt(4, name="prompt"))
  model = (bert.HEADS[head] if head else bert.BertModel)(TINY, slots)
  batch = tiny_batch()
  variables = model.init(jax.random.key(0), *batch)
  prompt = variables["params"]["bert"]["prompt"] if head else variables["params"]["prompt"]
  assert prompt["prompt"].shape == (2, 4, TINY.embed_dim)
  first = model.apply(variables, *batch, prompt_index=jnp.array([0, 0, 1]))
  second = model.apply(variables, *batch, prompt_index=jnp.array([0, 0, 0]))
  first, second = (x.pooler_output if head is None else x for x in (first, second))
  np.testing.assert_array_equal(first[:2], second[:2])
  assert not np.allclose(first[2], second[2])
  if head == "token_classification":
    assert first.shape == (3, 9, TINY.num_labels)  # one row per input token: the 4 prompt rows are dropped


class _PromptWithoutTokenRows(_Prompt):
  token_rows = None


def test_token_head_names_an_input_transform_that_cannot_drop_its_rows():
  slots = Slots(input_transform=lambda where, backbone, embed_dim: _PromptWithoutTokenRows(4, name="prompt"))
  with pytest.raises(ValueError, match=r"_PromptWithoutTokenRows turned 9 input rows into 13 but has no "
                                       r"token_rows method"):
    bert.BertForTokenClassification(TINY, slots).init(jax.random.key(0), *tiny_batch())


def test_too_long_input_names_both_lengths():
  ids = np.ones((1, TINY.max_position_embeddings + 1), np.int32)
  with pytest.raises(ValueError, match=r"input length 25 exceeds max_position_embeddings=24"):
    bert.BertModel(TINY).init(jax.random.key(0), ids)
