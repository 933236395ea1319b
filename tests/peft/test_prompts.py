"""Prompt tuning: the input_transform against an independent concatenation, the prompt bank, every init."""
import functools
import math
import os
import re

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax import gin_utils, runs
from prompt_tuning_jax.models import bert, rows, t5_config
from prompt_tuning_jax.models.bert_config import BertConfig
from prompt_tuning_jax.models.slots import Slots
from prompt_tuning_jax.models.t5 import T5
from prompt_tuning_jax.peft import prompt_init, prompt_params, prompts

T5_TINY = t5_config.preset("t5_1_1_small", vocab_size=128, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                           num_encoder_layers=2, num_decoder_layers=2)
BERT_TINY = BertConfig(vocab_size=97, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=48, num_layers=2,
                       max_position_embeddings=24)
P = 5


def with_prompt(model_cls, config, **kwargs):
  factory = functools.partial(prompts.prompt_factory, prompt_length=P, **kwargs)
  return model_cls(config, Slots(input_transform=factory))


def t5_tokens(length=9):
  """[3, length] ids; rows 1 and 2 end in padding."""
  tokens = np.random.default_rng(0).integers(2, 128, (3, length)).astype(np.int32)
  tokens[1, 6:] = 0
  tokens[2, 4:] = 0
  return tokens


def init(model, *args, **kwargs):
  return nn.meta.unbox(model.init(jax.random.key(0), *args, **kwargs)["params"])


def without_prompt(params):
  return {**params, "encoder": {k: v for k, v in params["encoder"].items() if k != "prompt"}}


def insert(embedded, mask, prompt, offset):
  """Independent numpy reference: prompt [P, d] joined at `offset`, mask ones for its rows."""
  b = embedded.shape[0]
  rows = np.broadcast_to(np.asarray(prompt), (b,) + prompt.shape)
  emb = np.concatenate([embedded[:, :offset], rows, embedded[:, offset:]], axis=1)
  return emb, np.concatenate([mask[:, :offset], np.ones((b, len(prompt)), bool), mask[:, offset:]], axis=1)


@pytest.mark.parametrize("placement,offset", [(None, 0), ("after_bos", 1)])
def test_t5_prompt_matches_encode_from_embeddings(placement, offset):
  """Relative positions span the prompt: same as feeding the joined embeddings with the extended mask."""
  tokens = t5_tokens()
  model = with_prompt(T5, T5_TINY, placement=placement)
  params = init(model, tokens, tokens[:, :3])
  encoded, mask = model.apply({"params": params}, tokens, method=T5.encode)

  base, base_params = T5(T5_TINY), without_prompt(params)
  embedded = base.apply({"params": base_params}, tokens, method=lambda m, t: m.encoder.embed(t))
  emb, ref_mask = insert(np.asarray(embedded), tokens > 0, params["encoder"]["prompt"]["prompt"][0], offset)
  expected = base.apply({"params": base_params}, jnp.asarray(emb), jnp.asarray(ref_mask), tokens,
                        method=lambda m, e, k, t: m.encoder.encode_from_embeddings(e, k, t))
  np.testing.assert_array_equal(mask, ref_mask)
  np.testing.assert_allclose(encoded, expected, atol=1e-6, rtol=0)
  assert encoded.shape == (3, 9 + P, 32)


def test_t5_padding_stays_masked():
  """The combined mask keeps padding out: noise in the padded rows changes no real output."""
  tokens = t5_tokens()
  model = with_prompt(T5, T5_TINY)
  params = init(model, tokens, tokens[:, :3])
  run = lambda method, *args: model.apply({"params": params}, *args, method=method)
  embedded = run(lambda m, t: m.encoder.embed(t), tokens)
  joined, mask = run(lambda m, e, k, t: m.encoder.combine_inputs(e, k, t), embedded, tokens > 0, tokens)
  joined = rows.join_rows(joined)
  assert mask[:, :P].all() and (np.asarray(mask[:, P:]) == (tokens > 0)).all()
  noise = np.random.default_rng(3).normal(size=joined.shape) * 10 * ~np.asarray(mask)[..., None]
  encode = lambda m, e, k, t: m.encoder.encode_from_embeddings(e, k, t)
  clean, noisy = run(encode, joined, mask, tokens), run(encode, joined + noise, mask, tokens)
  real = np.asarray(mask)
  np.testing.assert_array_equal(np.asarray(noisy)[real], np.asarray(clean)[real])
  assert not np.allclose(np.asarray(noisy)[~real], np.asarray(clean)[~real])


def test_bert_cls_stays_at_position_zero():
  ids = np.random.default_rng(1).integers(1, 97, (2, 7)).astype(np.int32)
  ids[:, 0] = 2  # a [CLS]-like first token
  ids[1, 5:] = 0
  model = with_prompt(bert.BertModel, BERT_TINY)
  params = init(model, ids)
  embedded = model.apply({"params": params}, ids, method=bert.BertModel.embed)
  joined, mask = model.apply({"params": params}, embedded, ids > 0, ids, method=bert.BertModel.combine_inputs)
  joined = rows.join_rows(joined)
  np.testing.assert_array_equal(joined[:, 0], embedded[:, 0])  # [CLS] row untouched at 0
  emb, ref_mask = insert(np.asarray(embedded), ids > 0, params["prompt"]["prompt"][0], 1)
  np.testing.assert_array_equal(joined, emb)
  np.testing.assert_array_equal(mask, ref_mask)
  hidden, _ = model.apply({"params": params}, ids, method=bert.BertModel.encode)
  base_params = {k: v for k, v in params.items() if k != "prompt"}
  expected = bert.BertModel(BERT_TINY).apply({"params": base_params}, jnp.asarray(emb), jnp.asarray(ref_mask), ids,
                                             method=bert.BertModel.encode_from_embeddings)
  np.testing.assert_allclose(hidden, expected, atol=1e-6, rtol=0)


def test_bert_token_head_returns_the_input_tokens_rows_without_the_prompts():
  """Token logits [b, l, C]: the classifier over the encoder's [b, P+l, d] with the prompt's rows 1..P taken out
  (numpy), so they line up with the input tokens (and the labels)."""
  ids = np.random.default_rng(2).integers(1, 97, (2, 7)).astype(np.int32)
  ids[1, 5:] = 0
  model = with_prompt(bert.BertForTokenClassification, BERT_TINY.replace(num_labels=3))
  params = init(model, ids)
  logits = np.asarray(model.apply({"params": params}, ids))
  hidden, _ = with_prompt(bert.BertModel, BERT_TINY).apply({"params": params["bert"]}, ids,
                                                           method=bert.BertModel.encode)  # [b, P+l, d]
  kernel, bias = (np.asarray(params["classifier"][k]) for k in ("kernel", "bias"))
  every_row = np.asarray(hidden) @ kernel + bias  # [b, P+l, C]
  expected = np.concatenate([every_row[:, :1], every_row[:, 1 + P:]], axis=1)  # [b, l, C]
  assert logits.shape == (2, 7, 3)
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)

@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["t5", "bert"])
def test_first_layer_forms_no_input_gradient_for_the_frozen_token_rows(backbone):
  """The prompt reaches the encoder as RowBlocks: same prompt gradient as through the joined rows, without the
  layer-0 query/key/value input-gradient products over the l token rows (3 x 2 b l d (n h) FLOPs)."""
  if backbone == "t5":
    tokens, model, stack = t5_tokens(), with_prompt(T5, T5_TINY), lambda m: m.encoder
    params, config = init(model, t5_tokens(), t5_tokens()[:, :3]), T5_TINY
    prompt_params = params["encoder"]["prompt"]
    put = lambda p: {**params, "encoder": {**params["encoder"], "prompt": p}}
  else:
    tokens = np.random.default_rng(1).integers(1, 97, (3, 9)).astype(np.int32)
    model, stack, config = with_prompt(bert.BertModel, BERT_TINY), lambda m: m, BERT_TINY
    params = init(model, tokens)
    prompt_params = params["prompt"]
    put = lambda p: {**params, "prompt": p}

  weights = np.random.default_rng(2).normal(size=(tokens.shape[0], tokens.shape[1] + P, config.embed_dim))

  def loss(prompt, join):
    def encode(m, t):
      embedded, mask = stack(m).combine_inputs(stack(m).embed(t), t > 0, t)
      assert isinstance(embedded, rows.RowBlocks)
      return stack(m).encode_from_embeddings(rows.join_rows(embedded) if join else embedded, mask, t)
    encoded = model.apply({"params": put(prompt)}, tokens, method=encode)
    return jnp.sum(encoded * weights)  # not sum(x**2): T5's final RMSNorm makes that nearly constant

  grads = {join: jax.jit(jax.grad(functools.partial(loss, join=join)))(prompt_params) for join in (False, True)}
  np.testing.assert_allclose(grads[False]["prompt"], grads[True]["prompt"], rtol=1e-4, atol=1e-5)
  flops = {join: jax.jit(jax.grad(functools.partial(loss, join=join))).lower(prompt_params).compile()
           .cost_analysis()["flops"] for join in (False, True)}
  b, l = tokens.shape
  saved = 3 * 2 * b * l * config.embed_dim * config.num_heads * config.head_dim
  print(f"{backbone}: joined {flops[True]:.0f} FLOPs, blocks {flops[False]:.0f}, layer-0 dx products {saved}")
  assert flops[True] - flops[False] >= 0.9 * saved


def test_prompt_bank_matches_single_prompts():
  tokens = t5_tokens()
  decoder = tokens[:, :3]
  bank_model = with_prompt(T5, T5_TINY, num_prompts=3)
  params = init(bank_model, tokens, decoder)
  rng = np.random.default_rng(2)
  singles = [{"prompt": jnp.asarray(rng.uniform(-0.5, 0.5, (1, P, 32)), jnp.float32)} for _ in range(3)]
  params["encoder"]["prompt"] = prompt_params.stack_prompts(singles)
  assert params["encoder"]["prompt"]["prompt"].shape == (3, P, 32)
  index = np.array([2, 0, 1], np.int32)
  logits = bank_model.apply({"params": params}, tokens, decoder, prompt_index=index)
  single_model = with_prompt(T5, T5_TINY)
  for i, k in enumerate(index):
    alone = single_model.apply({"params": {**params, "encoder": {**params["encoder"], "prompt": singles[k]}}},
                               tokens, decoder)
    np.testing.assert_allclose(logits[i], alone[i], atol=1e-6, rtol=0)
  first = bank_model.apply({"params": params}, tokens, decoder)  # prompt_index=None -> prompt 0
  np.testing.assert_array_equal(first, bank_model.apply({"params": params}, tokens, decoder,
                                                        prompt_index=np.zeros(3, np.int32)))
  out_of_range = bank_model.apply({"params": params}, tokens, decoder, prompt_index=np.array([0, 3, 0], np.int32))
  assert np.isnan(out_of_range[1]).all() and np.isfinite(out_of_range[0]).all()


def test_stack_prompts_shapes_and_errors():
  a, b = jnp.zeros((P, 4)), jnp.ones((2, P, 4))
  assert prompt_params.stack_prompts([a, b]).shape == (3, P, 4)
  with pytest.raises(ValueError, match="different"):
    prompt_params.stack_prompts([a, jnp.zeros((P + 1, 4))])


def test_param_axes():
  gin_utils.parse_gin(["models/t5_1_1_small.gin", "methods/prompt_tuning.gin"])
  model = gin_utils.configured_macro("MODEL")
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 2), jnp.int32))
  assert abstract["params"]["encoder"]["prompt"]["prompt"].names == ("prompt_bank", "prompt", "embed")


@pytest.mark.parametrize("method", ["prompt_tuning", "prompt_tuning_random", "prompt_tuning_vocab"])
@pytest.mark.parametrize("model_file", ["t5_1_1_base", "bert_base"])
def test_counts_base_models(model_file, method, parameter_report):
  """P * d = 76,800 on both backbones (BERT adds its classifier head, 768 * 2 + 2)."""
  report = parameter_report([f"models/{model_file}.gin", f"methods/{method}.gin"])
  expected = {"prompt": 76_800} if model_file.startswith("t5") else {"prompt": 76_800, "classifier": 1_538}
  assert report["trainable_by_module"] == expected


def test_length_errors():
  tokens = t5_tokens(8)
  model = with_prompt(T5, T5_TINY, max_length=10)
  with pytest.raises(ValueError, match=r"prompt_length=5 \+ input length 8 = 13 exceeds max_length=10"):
    init(model, tokens, tokens[:, :3])
  ids = np.ones((1, 510), np.int32)
  long_bert = BERT_TINY.replace(max_position_embeddings=512, num_layers=1)
  with pytest.raises(ValueError, match="input length 510 = 515 exceeds max_length=512"):
    init(with_prompt(bert.BertModel, long_bert), ids)
  with pytest.raises(ValueError, match="move \\[CLS\\]"):
    init(with_prompt(bert.BertModel, BERT_TINY, placement="prefix"), ids[:, :4])
  with pytest.raises(ValueError, match="unknown prompt placement"):
    init(with_prompt(T5, T5_TINY, placement="suffix"), tokens, tokens[:, :3])


# Initialisers.

def table(rows=6000, d=16, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(rows, d)), jnp.float32)


def row_ids(prompt, embedding):
  """Index of the table row each prompt row equals (asserts every row is a table row)."""
  matches = np.all(np.asarray(prompt)[:, None] == np.asarray(embedding)[None], axis=-1)  # [P, vocab]
  assert (matches.sum(1) == 1).all()
  return matches.argmax(1)


@pytest.mark.parametrize("symmetric,low,high", [(True, -0.5, 0.5), (False, 0.0, 0.5)])
def test_random_uniform_ranges(symmetric, low, high):
  x = np.asarray(prompt_init.RandomUniform(symmetric=symmetric)(jax.random.key(0), 100, 768))
  assert low <= x.min() < low + 0.01 and high - 0.01 < x.max() < high
  n = x.size  # uniform mean (low+high)/2, std (high-low)/sqrt(12); 5-sigma bounds on the sample stats
  assert abs(x.mean() - (low + high) / 2) < 5 * (high - low) / math.sqrt(12 * n)
  assert abs(x.std() - (high - low) / math.sqrt(12)) < 0.01


def test_sampled_vocab_rows_are_distinct_common_rows():
  embedding = table()
  prompt = prompt_init.SampledVocab()(jax.random.key(0), 100, 16, embedding)
  ids = row_ids(prompt, embedding)
  assert len(set(ids.tolist())) == 100 and ids.max() < 5000
  shifted = row_ids(prompt_init.SampledVocab(population_start=1000)(jax.random.key(0), 100, 16, embedding), embedding)
  assert shifted.min() >= 1000
  with pytest.raises(ValueError, match="cannot sample 8 distinct prompt rows from a population of 7"):
    prompt_init.SampledVocab()(jax.random.key(0), 8, 16, embedding[:7])


def test_class_labels_mean_of_pieces():
  embedding = table()
  prompt = prompt_init.ClassLabels(label_ids=((3, 4, 5), (), (7,)))(jax.random.key(0), 6, 16, embedding)
  np.testing.assert_allclose(prompt[0], embedding[jnp.array([3, 4, 5])].mean(0), atol=1e-6)
  np.testing.assert_array_equal(prompt[2], embedding[7])
  sampled = row_ids(np.asarray(prompt)[[1, 3, 4, 5]], embedding)  # the unencodable label and the rest
  assert len(set(sampled.tolist())) == 4 and sampled.max() < 5000
  with pytest.warns(UserWarning, match="without class labels"):
    prompt_init.ClassLabels()(jax.random.key(0), 6, 16, embedding)
  with pytest.raises(ValueError, match="3 class labels do not fit in prompt_length=2"):
    prompt_init.ClassLabels(label_ids=((1,), (2,), (3,)))(jax.random.key(0), 2, 16, embedding)


class FakeVocab:
  unk_id = 2

  def encode(self, text):
    return {"positive": [10, 11], "negative": [12], "???": [2, 2], "": [], "hello world": [5, 6, 7]}[text]


def test_encode_labels_warns_and_falls_back():
  with pytest.warns(UserWarning, match="falls back to sampled vocabulary") as record:
    ids = prompt_init.encode_labels(FakeVocab(), ["positive", "???", "", "negative"])
  assert ids == ((10, 11), (), (), (12,)) and len(record) == 2
  with pytest.raises(ValueError, match="need a vocabulary"):
    prompt_init.encode_labels(None, ["positive"])
  assert prompt_init.encode_labels(None, []) == ()


def test_from_text_cycles_and_truncates():
  embedding = table()
  ids = prompt_init.encode_text(FakeVocab(), "hello world")
  np.testing.assert_array_equal(prompt_init.FromText(ids)(None, 7, 16, embedding),
                                embedding[jnp.array([5, 6, 7, 5, 6, 7, 5])])
  np.testing.assert_array_equal(prompt_init.FromText(ids)(None, 2, 16, embedding), embedding[jnp.array([5, 6])])
  with pytest.raises(ValueError, match="encodes to no tokens"):
    prompt_init.encode_text(FakeVocab(), "")


def test_from_file(tmp_path):
  path = str(tmp_path / "prompt.npy")
  saved = np.random.default_rng(0).normal(size=(P, 32)).astype(np.float32)
  np.save(path, saved)
  model = with_prompt(T5, T5_TINY, initializer=prompt_init.FromFile(path))
  tokens = t5_tokens()
  np.testing.assert_array_equal(init(model, tokens, tokens[:, :3])["encoder"]["prompt"]["prompt"][0], saved)
  with pytest.raises(ValueError, match=re.escape(f"prompt file {path} holds shape (5, 32)") + ".*" + r"\(4, 32\)"):
    prompt_init.FromFile(path)(None, 4, 32)


def perturbed(params, seed=3):
  """Every leaf plus noise, so that LayerNorm scales and biases and the token-type rows all matter."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda x: x + jnp.asarray(rng.normal(size=x.shape) * 0.5, x.dtype), params)


@pytest.mark.parametrize("model_cls,config", [(T5, T5_TINY), (bert.BertModel, BERT_TINY)])
def test_initialize_prompt_after_checkpoint(model_cls, config):
  """Table-based inits leave NaN at model.init; initialize_prompt draws from the seam table of params."""
  model = with_prompt(model_cls, config, initializer=prompt_init.SampledVocab(), num_prompts=2)
  tokens = t5_tokens()
  params = init(model, tokens, tokens[:, :3]) if model_cls is T5 else init(model, tokens % 97)
  path = ("encoder", "prompt", "prompt") if model_cls is T5 else ("prompt", "prompt")
  get = lambda p: functools.reduce(lambda tree, key: tree[key], path, p)
  assert np.isnan(get(params)).all()
  params = perturbed(params)
  filled = prompt_params.initialize_prompt(params, prompt_init.SampledVocab(), jax.random.key(1))
  seam = prompt_params.seam_table(params)
  bank = get(filled)
  assert bank.shape == (2, P, 32) and not np.array_equal(bank[0], bank[1])
  for prompt in bank:
    assert len(set(row_ids(prompt, seam).tolist())) == P
  with pytest.raises(ValueError, match="no 'prompt/prompt' parameter"):
    prompt_params.initialize_prompt({"token_embedder": {"embedding": seam}}, prompt_init.SampledVocab(),
                              jax.random.key(1))


def test_t5_seam_table_is_the_raw_table():
  """T5's prompt joins the raw embedded input: its seam table is the token_embedder table itself."""
  tokens = t5_tokens()
  params = init(with_prompt(T5, T5_TINY), tokens, tokens[:, :3])
  assert prompt_params.seam_table(params) is prompt_params.find_embedding_table(params)


@pytest.mark.parametrize("model_cls", [bert.BertModel, bert.BertForSequenceClassification])
def test_bert_seam_table_is_what_the_embeddings_give_without_positions(model_cls):
  """Row t = the model's own embedding of token t in segment A, with the position table zeroed."""
  ids = np.arange(96, dtype=np.int32).reshape(4, 24)  # every id but one, at most max_position_embeddings=24 long
  model = with_prompt(model_cls, BERT_TINY)
  params = perturbed(init(model, ids))
  base = params if model_cls is bert.BertModel else params["bert"]
  no_positions = {**base, "embeddings": {**base["embeddings"], "position_embeddings": {
      "embedding": jnp.zeros_like(base["embeddings"]["position_embeddings"]["embedding"])}}}
  expected = with_prompt(bert.BertModel, BERT_TINY).apply({"params": no_positions}, ids, method=bert.BertModel.embed)
  seam = prompt_params.seam_table(params)
  assert seam.shape == (97, 32) and seam.dtype == jnp.float32
  np.testing.assert_allclose(seam[ids], expected, rtol=1e-5, atol=1e-5)
  raw = prompt_params.find_embedding_table(params)
  assert not np.allclose(seam, raw, atol=0.1)


def test_bert_class_labels_are_label_rows_at_the_seam():
  """ClassLabels through initialize_prompt on BERT: row i = the mean seam row of label i's pieces."""
  ids = np.arange(1, 9, dtype=np.int32).reshape(2, 4)
  initializer = prompt_init.ClassLabels(label_ids=((3, 4), (7,)))
  model = with_prompt(bert.BertModel, BERT_TINY, initializer=initializer)
  params = perturbed(init(model, ids))
  prompt = prompt_params.initialize_prompt(params, initializer, jax.random.key(0))["prompt"]["prompt"][0]
  seam = prompt_params.seam_table(params)
  np.testing.assert_allclose(prompt[0], (seam[3] + seam[4]) / 2, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(prompt[1], seam[7])
  assert len(set(row_ids(prompt[2:], seam).tolist())) == P - 2


def test_match_table_norm_rescales_the_base_draw():
  """One scalar: the rows keep the base draw's directions and take the table's mean row norm."""
  embedding = table() * 7.0
  initializer = prompt_init.MatchTableNorm(prompt_init.RandomUniform())
  prompt = np.asarray(initializer(jax.random.key(0), 100, 16, embedding))
  base = np.asarray(prompt_init.RandomUniform()(jax.random.key(0), 100, 16))
  ratio = prompt / base
  np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(prompt, axis=-1).mean(),
                             np.linalg.norm(np.asarray(embedding), axis=-1).mean(), rtol=1e-5)
  # Drawn after the checkpoint: NaN at model.init, like the other table-based inits.
  ids = np.arange(1, 9, dtype=np.int32).reshape(2, 4)
  assert initializer.needs_embedding
  assert np.isnan(init(with_prompt(bert.BertModel, BERT_TINY, initializer=initializer), ids)["prompt"]["prompt"]).all()


def test_results_files_bind_bert_scale_inits():
  """The MiniLM results files: sampled vocab from 'the' (id 1996), random init at the seam's scale."""
  bindings = ["TRAIN_STEPS = 10", "CLASS_LABELS = ['negative', 'positive']"]
  for name in ("prompt_tuning_vocab", "prompt_tuning_class_label", "gpc"):
    gin_utils.parse_gin(["models/minilm.gin", f"results/{name}.gin"], bindings)
    assert gin.query_parameter("prompt_init.SampledVocab.population_start") == 1996, name
  gin_utils.parse_gin(["models/minilm.gin", "results/prompt_tuning_random.gin"], bindings)
  assert gin_utils.configured_macro("PROMPT_INIT") == prompt_init.MatchTableNorm(
      prompt_init.RandomUniform())



@pytest.mark.parametrize("method", ["prompt_tuning", "prompt_tuning_random", "prompt_tuning_vocab", "gpc"])
def test_prompt_files_bind_the_runs_init_step(method):
  """runs.prepare_params, which runs.train applies once the frozen base is loaded, draws every prompt file's bank
  with its PROMPT_INIT and key(seed + 2); a method file that binds no init step leaves the params as they are."""
  tiny = [f"t5_config.preset.{k} = {v}" for k, v in dict(vocab_size=128, embed_dim=32, num_heads=4, head_dim=8,
                                                          mlp_dim=64, num_encoder_layers=2, num_decoder_layers=2).items()]
  gin_utils.parse_gin(["models/t5_1_1_small.gin", f"methods/{method}.gin"], [*tiny, f"PROMPT_LENGTH = {P}"])
  model = gin_utils.configured_macro("MODEL")
  params = init(model, t5_tokens(4), t5_tokens(4)[:, :2])
  prepared = runs.prepare_params(params, seed=5)
  initializer = gin_utils.configured_macro("PROMPT_INIT")
  expected = prompt_params.initialize_prompt(params, initializer, jax.random.key(7))["encoder"]["prompt"]["prompt"]
  np.testing.assert_array_equal(prepared["encoder"]["prompt"]["prompt"], expected)
  assert np.isfinite(expected).all()
  gin_utils.parse_gin(["models/t5_1_1_small.gin", "methods/lora.gin"], tiny)
  assert runs.prepare_params(params, seed=5) is params

def test_bert_population_is_frequent_whole_words(minilm_dir):
  """MiniLM's vocab.txt: ids 1996..6995 (SampledVocab.population_start = 1996) start at 'the', hold no single
  characters and 421 '##' pieces; ids 1000..5999 (the former start) held 996 single characters."""
  with open(os.path.join(minilm_dir, "vocab.txt"), encoding="utf-8") as f:
    vocab = f.read().splitlines()
  count = lambda words: (sum(w.startswith("##") for w in words), sum(len(w) == 1 for w in words))
  assert vocab[1996:2000] == ["the", "of", "and", "in"]
  assert count(vocab[1996:1996 + 5000]) == (421, 0)
  assert count(vocab[1000:6000]) == (322, 996)


def test_is_prompt_bank_matches_a_prompt_modules_own_parameter_only():
  assert prompt_params.is_prompt_bank("encoder/prompt/prompt") and prompt_params.is_prompt_bank("prompt/prompt")
  for path in ("encoder/prompt", "encoder/xprompt/prompt", "encoder/gpc/prompt", "encoder/prompt/prompt/scale"):
    assert not prompt_params.is_prompt_bank(path), path
