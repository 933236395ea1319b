"""PASTA: layer inputs against a numpy reference, occurrence slots, zero vectors, dropout, counts, errors."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.models import bert, bert_stack, t5_config
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.models.t5 import T5
from prompt_tuning_jax.models.t5_layers import EncoderLayer
from prompt_tuning_jax.peft import pasta, prompts

D = 32
T5_TINY = t5_config.preset("t5_1_1_small", vocab_size=128, embed_dim=D, num_heads=4, head_dim=8, mlp_dim=64,
                           num_encoder_layers=2, num_decoder_layers=2)
BERT_TINY = BertConfig(vocab_size=128, embed_dim=D, num_heads=4, head_dim=8, mlp_dim=48, num_layers=2,
                       max_position_embeddings=24)
CLS, SEP, T5_EOS = 101, 102, 1
# Rows: pair, pair with other [SEP] positions, single without padding, four specials (> n_s = 3: the 4th
# gets no vector), and a [SEP] id under padding (mask 0: never special).
BERT_IDS = np.array([[CLS, 7, 8, SEP, 9, 10, SEP, 0, 0],
                     [CLS, 7, SEP, 8, 9, 10, 11, SEP, 0],
                     [CLS, 7, 8, 9, 10, 11, 12, 13, SEP],
                     [CLS, SEP, 7, SEP, 8, SEP, 9, 0, 0],
                     [CLS, 7, SEP, SEP, SEP, 0, 0, 0, 0]], np.int32)
BERT_MASK = np.array([[1] * 7 + [0] * 2, [1] * 8 + [0], [1] * 9, [1] * 7 + [0] * 2, [1] * 3 + [0] * 6], np.int32)
T5_IDS = np.array([[5, 6, 7, T5_EOS, 0, 0], [5, T5_EOS, 0, 0, 0, 0], [5, 6, 7, 8, 9, T5_EOS],
                   [5, T5_EOS, 6, T5_EOS, 7, T5_EOS]], np.int32)


def pasta_slots(**options):
  return Slots(layer_input_hook=functools.partial(pasta.pasta_factory, **options))


def without_pasta(tree):
  return {k: without_pasta(v) if isinstance(v, dict) else v for k, v in tree.items() if k != "pasta"}


def init(model, *args):
  return nn.meta.unbox(model.init(jax.random.key(0), *args)["params"])


def with_vectors(params, path, vectors):
  """params with the special_token_embedding under `path` (e.g. ('encoder',)) replaced by `vectors`."""
  if not path:
    return {**params, "pasta": {"special_token_embedding": jnp.asarray(vectors)}}
  return {**params, path[0]: with_vectors(params[path[0]], path[1:], vectors)}


def reference_delta(ids, mask, special_ids, vectors):
  """numpy: the j-th special token (in order, real positions only) of each row gets vectors[j], j < n_s."""
  delta = np.zeros(ids.shape + (vectors.shape[-1],), np.float32)
  for b in range(ids.shape[0]):
    j = 0
    for t in range(ids.shape[1]):
      if mask[b, t] and ids[b, t] in special_ids:
        if j < len(vectors):
          delta[b, t] = vectors[j]
        j += 1
  return delta


def layer_io(model, params, args, layer_cls):
  """[(input, output)] of every encoder layer, recorded with a method interceptor."""
  seen = []

  def record(next_fun, call_args, kwargs, context):
    out = next_fun(*call_args, **kwargs)
    if isinstance(context.module, layer_cls) and context.method_name == "__call__":
      seen.append((np.asarray(call_args[0]), np.asarray(out[0] if isinstance(out, tuple) else out)))
    return out

  with nn.intercept_methods(record):
    model.apply({"params": params}, *args)
  return seen


def rms(x):
  return np.sqrt(np.mean(np.square(x), -1, keepdims=True))


@pytest.mark.parametrize("backbone,relative_to_rms", [("bert", False), ("t5", False), ("t5", True)])
def test_layer_inputs_match_numpy(backbone, relative_to_rms):
  if backbone == "bert":
    model_cls, config, args, layer_cls = bert.BertModel, BERT_TINY, (BERT_IDS, BERT_MASK), bert_stack.BertLayer
    ids, mask, special, n_s, path = BERT_IDS, BERT_MASK, (CLS, SEP), 3, ("encoder",)
  else:  # two slots, so the 3rd EOS of the last row gets none
    model_cls, config, args, layer_cls = T5, T5_TINY, (T5_IDS, T5_IDS[:, :2]), EncoderLayer
    ids, mask, special, n_s, path = T5_IDS, T5_IDS > 0, (T5_EOS,), 2, ("encoder",)
  model = model_cls(config, pasta_slots(num_special_tokens=n_s, relative_to_rms=relative_to_rms))
  params = init(model, *args)
  assert params["encoder"]["pasta"]["special_token_embedding"].shape == (2, n_s, D)
  vectors = np.random.default_rng(1).normal(size=(2, n_s, D)).astype(np.float32)
  params = with_vectors(params, path, vectors)
  (base_in, _), _ = layer_io(model_cls(config), without_pasta(params), args, layer_cls)
  (in0, out0), (in1, _) = layer_io(model, params, args, layer_cls)
  scale = (lambda h: rms(h)) if relative_to_rms else (lambda h: 1.0)
  np.testing.assert_allclose(in0, base_in + scale(base_in) * reference_delta(ids, mask, special, vectors[0]),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(in1, out0 + scale(out0) * reference_delta(ids, mask, special, vectors[1]),
                             rtol=1e-6, atol=1e-6)
  untouched = ~np.isin(ids, special)
  np.testing.assert_array_equal(in0[untouched], base_in[untouched])


def test_two_seps_get_different_vectors_by_occurrence():
  slots = pasta.special_token_slots(jnp.asarray(BERT_IDS), jnp.asarray(BERT_MASK), (CLS, SEP))
  np.testing.assert_array_equal(slots, [[0, -1, -1, 1, -1, -1, 2, -1, -1],
                                        [0, -1, 1, -1, -1, -1, -1, 2, -1],
                                        [0, -1, -1, -1, -1, -1, -1, -1, 1],
                                        [0, 1, -1, 2, -1, 3, -1, -1, -1],
                                        [0, -1, 1, -1, -1, -1, -1, -1, -1]])
  hook = pasta.pasta_factory(where="encoder", backbone="bert", num_layers=2, embed_dim=D)
  h = jnp.zeros(BERT_IDS.shape + (D,))
  context = {"tokens": jnp.asarray(BERT_IDS), "mask": jnp.asarray(BERT_MASK, bool)}
  params = nn.meta.unbox(hook.init(jax.random.key(0), h, layer=1, state=None, context=context))
  out, state = hook.apply(params, h, layer=1, state=None, context=context)
  vectors = params["params"]["special_token_embedding"][1]
  assert state is None
  np.testing.assert_array_equal(out[0, 3], vectors[1])  # first [SEP]
  np.testing.assert_array_equal(out[0, 6], vectors[2])  # second [SEP]
  assert not np.allclose(out[0, 3], out[0, 6])
  np.testing.assert_array_equal(out[1, 7], vectors[2])  # the second [SEP] sits elsewhere in row 1


@pytest.mark.parametrize("backbone", ["t5", "bert"])
def test_zero_vectors_are_the_base_model_exactly(backbone):
  if backbone == "bert":
    model_cls, config, args = bert.BertForSequenceClassification, BERT_TINY, (BERT_IDS, BERT_MASK)
    path = ("bert", "encoder")
  else:
    model_cls, config, args, path = T5, T5_TINY, (T5_IDS, T5_IDS[:, :3]), ("encoder",)
  model = model_cls(config, pasta_slots())
  params = with_vectors(init(model, *args), path, np.zeros((2, 3 if backbone == "bert" else 1, D), np.float32))
  np.testing.assert_array_equal(model.apply({"params": params}, *args),
                                model_cls(config).apply({"params": without_pasta(params)}, *args))


def test_dropout_hits_only_the_added_vectors():
  hook = pasta.pasta_factory(where="encoder", backbone="t5", num_layers=2, embed_dim=D, dropout_rate=0.5)
  h = jnp.asarray(np.random.default_rng(2).normal(size=T5_IDS.shape + (D,)), jnp.float32)
  context = {"tokens": jnp.asarray(T5_IDS), "mask": jnp.asarray(T5_IDS > 0)}
  params = nn.meta.unbox(hook.init(jax.random.key(0), h, layer=0, state=None, context=context))
  out, _ = hook.apply(params, h, layer=0, state=None, context=context, deterministic=False,
                      rngs={"dropout": jax.random.key(3)})
  special = T5_IDS == T5_EOS
  np.testing.assert_array_equal(np.asarray(out)[~special], np.asarray(h)[~special])
  added = (np.asarray(out) - np.asarray(h))[special]  # each element: 0 or 2 * e (rate 0.5)
  e = np.broadcast_to(params["params"]["special_token_embedding"][0, 0], added.shape)
  dropped = np.abs(added) < 1e-7
  assert 0 < dropped.mean() < 1
  np.testing.assert_allclose(added[~dropped], 2 * e[~dropped], rtol=1e-5)


@pytest.mark.parametrize("files,bindings,expected", [
    (["models/bert_base.gin"], ["NUM_SPECIAL_TOKENS = 2"], {"pasta": 18_432, "classifier": 1_538}),
    (["models/bert_base.gin"], [], {"pasta": 27_648, "classifier": 1_538}),
    (["models/t5_1_1_base.gin"], [], {"pasta": 9_216}),
])
def test_counts(files, bindings, expected, parameter_report):
  report = parameter_report(files + ["methods/pasta.gin"], bindings)
  assert report["trainable_by_module"] == expected


def test_errors_are_named():
  prompt_first = Slots(input_transform=functools.partial(prompts.prompt_factory, prompt_length=2),
                       layer_input_hook=pasta.pasta_factory)
  with pytest.raises(ValueError, match=r"one token per hidden position: tokens \(4, 6\).*hidden \(4, 8\)"):
    T5(T5_TINY, prompt_first).init(jax.random.key(0), T5_IDS, T5_IDS[:, :2])
  with pytest.raises(ValueError, match="layer_input_hook slot needs per-layer calls; set scan_layers=False"):
    T5(T5_TINY.replace(scan_layers=True), pasta_slots()).init(jax.random.key(0), T5_IDS, T5_IDS[:, :2])
  make = functools.partial(pasta.pasta_factory, where="encoder", backbone="bert", num_layers=2, embed_dim=D)
  with pytest.raises(ValueError, match=r"num_special_tokens=0 and special_token_ids=\(101, 102\)"):
    make(num_special_tokens=0)
  with pytest.raises(ValueError, match="no defaults for backbone 'gpt'"):
    make(backbone="gpt")
  assert pasta.pasta_factory(where="decoder", backbone="t5", num_layers=2, embed_dim=D) is None
