"""Dataset-level evaluation on real data: metrics recomputed from predictions.jsonl, pad rows dropped, files.

T5: a tiny random T5 with a SentencePiece model trained here (on CB / RTE text) and a bank of 2 prompts.
BERT: the real MiniLM with a random classifier head, on bert_glue_rte; NER: a tiny token classifier built to tag
each WordPiece by lookup, on CLUENER dev (entity F1 recomputed from dev.json's spans).
"""
import collections
import dataclasses
import itertools
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
import seqio
import sentencepiece

import tasks  # noqa: F401  (registers every task)
from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.checkpoints import hf_bert
from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning_jax.evaluation import evaluator
from prompt_tuning_jax.evaluation import metrics as metrics_lib
from prompt_tuning_jax.models import bert, inputs
from tasks import buckets as buckets_lib
from tasks import data_dir, registry

DATA = data_dir.SHARED_DATA_DIR
T5_LENGTHS = {"inputs": 48, "targets": 4}
T5_TINY = ["t5_config.preset.vocab_size = 400", "t5_config.preset.embed_dim = 16", "t5_config.preset.num_heads = 2",
           "t5_config.preset.head_dim = 8", "t5_config.preset.mlp_dim = 32", "t5_config.preset.num_encoder_layers = 1",
           "t5_config.preset.num_decoder_layers = 1", "PROMPT_LENGTH = 2", "prompts.prompt_factory.num_prompts = 2"]


@pytest.fixture(scope="module")
def t5_tasks(tmp_path_factory):
  """{'cb', 'rte'} -> test task names, T5 taskless with a 400-piece SentencePiece model (pad 0, eos 1, unk 2)."""
  directory = tmp_path_factory.mktemp("spm")
  with open(os.path.join(DATA, "glue/RTE/dev.tsv"), encoding="utf-8") as rte, \
       open(os.path.join(DATA, "super_glue/CB/val.jsonl"), encoding="utf-8") as cb:
    text = "".join(itertools.chain(rte, cb)) + "entailment not_entailment contradiction neutral\n" * 20
  (directory / "text.txt").write_text(text)
  sentencepiece.SentencePieceTrainer.train(input=str(directory / "text.txt"), model_prefix=str(directory / "spm"),
                                           vocab_size=400, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
  vocabulary = seqio.SentencePieceVocabulary(str(directory / "spm.model"))
  names = {key: registry.register_task(dataset, registry.T5_TASKLESS, name=f"test_evaluator_{key}",
                                       vocabulary=vocabulary, data_dir=DATA).name
           for key, dataset in (("cb", "super_glue_cb"), ("rte", "glue_rte"))}
  yield names
  for name in names.values():
    registry.remove_task(name)


@pytest.fixture
def t5_model():
  """(model, params): a tiny T5 with 2 prompts; numpy-drawn weights (compiling model.init costs seconds)."""
  gin_utils.parse_gin(["models/t5_1_1_small.gin", "methods/prompt_tuning_random.gin"], T5_TINY)
  model = gin_utils.configured_macro("MODEL")
  args, kwargs = inputs.example_inputs(model)
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *args, **kwargs)["params"])
  rng = np.random.default_rng(0)
  return model, jax.tree_util.tree_map(lambda s: rng.normal(0.0, 0.5, s.shape).astype(s.dtype), shapes)


def read_outputs(directory):
  with open(os.path.join(directory, "metrics.json")) as f:
    metrics = json.load(f)
  with open(os.path.join(directory, "predictions.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert not [name for name in os.listdir(directory) if name.endswith(".tmp")]
  return metrics, records


def recomputed(task_name, records, key="prediction"):
  targets, predictions = [r["target"] for r in records], [r[key] for r in records]
  return {k: v for fn in registry.task_metrics(task_name) for k, v in fn(targets, predictions).items()}


@pytest.mark.slow
def test_t5_rank_classification_on_cb(t5_tasks, t5_model, tmp_path):
  model, params = t5_model
  task = t5_tasks["cb"]
  common = dict(task_name=task, split="validation", feature_lengths=T5_LENGTHS, max_examples=10)
  result = evaluator.evaluate(model, params, batch_size=4, output_dir=str(tmp_path), **common)  # 4 + 4 + 2 (+2 pad)
  assert result["scoring"] == "rank" and result["num_examples"] == 10
  metrics, records = read_outputs(tmp_path)
  assert metrics == pytest.approx(result) and len(records) == 10
  assert {k: result[k] for k in ("mean_3class_f1", "accuracy")} == pytest.approx(recomputed(task, records))
  labels = registry.label_strings(task)
  assert all(r["output"] == labels[int(np.argmax(r["score"]))] and len(r["score"]) == 3 for r in records)
  assert records[0]["input"].startswith("hypothesis: ") and "premise: " in records[0]["input"]  # the T5 text
  unpadded = evaluator.evaluate(model, params, batch_size=10, **common)  # one full batch: no pad rows at all
  assert unpadded == pytest.approx(result)


@pytest.mark.slow
def test_t5_generation_greedy_and_beam(t5_tasks, t5_model, tmp_path):
  model, params = t5_model
  task = t5_tasks["rte"]
  common = dict(task_name=task, split="validation", feature_lengths=T5_LENGTHS, batch_size=4, max_examples=5,
                scoring="generate", max_decode_length=3)
  greedy = evaluator.evaluate(model, params, output_dir=str(tmp_path / "greedy"), **common)
  beam = evaluator.evaluate(model, params, num_beams=2, output_dir=str(tmp_path / "beam"), **common)
  for result, name in ((greedy, "greedy"), (beam, "beam")):
    assert result["scoring"] == "generate" and result["num_examples"] == 5
    metrics, records = read_outputs(tmp_path / name)
    assert len(records) == 5 and all(isinstance(r["output"], str) for r in records)
    assert result["accuracy"] == pytest.approx(recomputed(task, records)["accuracy"]) == metrics["accuracy"]
  assert all(r["score"] is not None for r in read_outputs(tmp_path / "beam")[1])


@pytest.mark.slow
def test_ensemble_dataset_reports_each_prompt_as_single_runs(t5_tasks, t5_model, tmp_path):
  model, params = t5_model
  common = dict(task_name=t5_tasks["cb"], split="validation", feature_lengths=T5_LENGTHS, batch_size=4,
                max_examples=6)
  report = evaluator.evaluate_ensemble_dataset(model, params, 2, output_dir=str(tmp_path), **common)
  assert report["num_examples"] == 6 and report["num_prompts"] == 2 and report["scoring"] == "rank"
  singles = [evaluator.evaluate(model, params, prompt_index=k, **common)["accuracy"] for k in range(2)]
  assert [report["prompt_0/accuracy"], report["prompt_1/accuracy"]] == pytest.approx(singles)
  assert report["mean/accuracy"] == pytest.approx(np.mean(singles)) and report["best/accuracy"] == max(singles)
  metrics, records = read_outputs(tmp_path)
  assert metrics == pytest.approx(report) and len(records) == 6
  assert np.asarray(records[0]["scores"]).shape == (2, 3)
  for combiner in ("majority_vote", "mean_log_prob"):
    assert recomputed(common["task_name"], records, combiner)["accuracy"] == pytest.approx(
        report[f"{combiner}/accuracy"])


@pytest.mark.slow
def test_bert_minilm_on_rte_and_the_cached_evaluate_fn(minilm_dir, tmp_path, monkeypatch):
  base_model, base = hf_bert.load_hf_bert(minilm_dir)  # a random head, drawn in numpy (no init compile)
  model = bert.BertForSequenceClassification(dataclasses.replace(base_model.config, num_labels=2))
  rng = np.random.default_rng(0)
  params = {"bert": base, "classifier": {"kernel": rng.normal(0, 1, (384, 2)).astype(np.float32),
                                         "bias": np.zeros(2, np.float32)}}
  evaluate = evaluator.make_evaluate_fn(task_name="bert_glue_rte", split="validation",
                                        feature_lengths={"input_ids": 128}, batch_size=8, max_examples=20,
                                        data_dir=DATA, output_dir=str(tmp_path))
  monkeypatch.setattr(registry, "model_dataset", lambda *a, **k: pytest.fail("data read again"))
  monkeypatch.setattr(registry, "task_dataset", lambda *a, **k: pytest.fail("data read again"))
  result = evaluate(model, params)
  assert result["scoring"] == "classifier" and result["num_examples"] == 20
  metrics, records = read_outputs(tmp_path)
  assert metrics == pytest.approx(result) and len(records) == 20
  assert result["accuracy"] == pytest.approx(recomputed("bert_glue_rte", records)["accuracy"])
  assert records[0]["input"].startswith("[CLS] ") and records[0]["target"] in (0, 1)
  assert {r["prediction"] for r in records} <= {0, 1} and all(len(r["score"]) == 2 for r in records)
  assert evaluate(model, params) == result  # the cached batches again, identical


def test_auto_scoring_and_mismatches(t5_model):
  model, _ = t5_model
  assert evaluator.resolve_scoring(model, "super_glue_cb", "auto") == "rank"
  assert evaluator.resolve_scoring(model, "glue_stsb_taskless", "auto") == "generate"
  assert evaluator.resolve_scoring(model, "super_glue_record", "auto") == "generate"
  classifier = bert.BertForSequenceClassification(model.config)  # only its type matters here
  assert evaluator.resolve_scoring(classifier, "bert_glue_sst2", "auto") == "classifier"
  with pytest.raises(ValueError, match="bert_glue_sst2 is a bert task, but the model is a T5"):
    evaluator.resolve_scoring(model, "bert_glue_sst2", "auto")
  with pytest.raises(ValueError, match="super_glue_cb is a t5 task, but the model is a BertForSequenceClassification"):
    evaluator.resolve_scoring(classifier, "super_glue_cb", "auto")
  with pytest.raises(ValueError, match=r"scoring='rank' does not apply to super_glue_record \(label strings: None"):
    evaluator.resolve_scoring(model, "super_glue_record", "rank")
  tagger = bert.BertForTokenClassification(model.config)
  assert evaluator.resolve_scoring(tagger, "bert_cluener", "auto") == "token_classifier"
  with pytest.raises(ValueError, match="bert_cluener is a bert_tokens task, but the model is a "
                                      "BertForSequenceClassification"):
    evaluator.resolve_scoring(classifier, "bert_cluener", "auto")
  with pytest.raises(ValueError, match="bert_glue_sst2 is a bert task, but the model is a BertForTokenClassification"):
    evaluator.resolve_scoring(tagger, "bert_glue_sst2", "auto")
  with pytest.raises(ValueError, match=r"scoring='classifier' does not apply to bert_cluener"):
    evaluator.resolve_scoring(tagger, "bert_cluener", "classifier")


NER_LENGTHS = {"input_ids": 64}


def cluener_gold(count):
  """The first `count` CLUENER dev sentences as (characters, BIO tags), read from dev.json here."""
  sentences = []
  with open(os.path.join(DATA, "clue/cluener/dev.json"), encoding="utf-8") as f:
    for line in itertools.islice(f, count):
      record = json.loads(line)
      tags = ["O"] * len(record["text"])
      for entity_type, entities in record["label"].items():
        for start, end in itertools.chain.from_iterable(entities.values()):
          assert tags[start:end + 1] == ["O"] * (end + 1 - start), "overlapping spans: pick other sentences"
          tags[start:end + 1] = [f"B-{entity_type}"] + [f"I-{entity_type}"] * (end - start)
      sentences.append((list(record["text"]), tags))
  return sentences


def lookup_tagger(sentences, vocabulary, tag_names):
  """(model, params, {token id: tag}): a tiny BERT token classifier with a 3-row prompt that tags each WordPiece
  with its most frequent gold tag in `sentences` ('O' when unseen), so its F1 is neither 0 nor 100 (many
  characters are [UNK] in the English WordPiece vocabulary).

  Every layer's kernels and biases are zero, so a token's hidden state is LayerNorm(its word embedding) whatever
  its neighbours and the prompt rows are; word embedding i is a one-hot at its tag's index, read back by an
  identity classifier.
  """
  gin_utils.parse_gin(["models/minilm.gin", "models/bert_token_classification.gin",
                       "methods/prompt_tuning_random.gin"],
                      ["bert_config.preset.embed_dim = 32", "bert_config.preset.num_heads = 2",
                       "bert_config.preset.head_dim = 16", "bert_config.preset.mlp_dim = 32",
                       "bert_config.preset.num_layers = 1", f"NUM_LABELS = {len(tag_names)}", "PROMPT_LENGTH = 3"])
  model = gin_utils.configured_macro("MODEL")
  args, kwargs = inputs.example_inputs(model)
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *args, **kwargs)["params"])
  flat = {path: np.zeros(s.shape, s.dtype) for path, s in flatten_params(shapes).items()}
  flat.update({path: np.ones_like(v) for path, v in flat.items() if path.endswith("/scale")})
  flat["bert/prompt/prompt"] = np.random.default_rng(0).normal(0, 1, flat["bert/prompt/prompt"].shape)
  seen = collections.defaultdict(collections.Counter)
  for words, tags in sentences:
    for word, tag in zip(words, tags):
      pieces = vocabulary.encode(word)
      if pieces:
        seen[pieces[0]][tag] += 1
  tag_of = {piece: counts.most_common(1)[0][0] for piece, counts in seen.items()}
  embeddings = flat["bert/embeddings/word_embeddings/embedding"]
  embeddings[:, 0] = 1.0  # 'O'
  for piece, tag in tag_of.items():
    embeddings[piece] = np.eye(embeddings.shape[1])[tag_names.index(tag)]
  flat["classifier/kernel"] = np.eye(*flat["classifier/kernel"].shape, dtype=np.float32)
  return model, unflatten_params(flat), tag_of


def test_bert_token_classifier_on_cluener_reports_entity_f1(tmp_path):
  task, count = "bert_cluener", 12
  sentences = cluener_gold(count)
  vocabulary = seqio.get_mixture_or_task(task).output_features["input_ids"].vocabulary
  tag_names = registry.label_strings(task)
  model, params, tag_of = lookup_tagger(sentences, vocabulary, tag_names)
  result = evaluator.evaluate(model, params, task_name=task, split="validation", feature_lengths=NER_LENGTHS,
                              batch_size=8, max_examples=count, data_dir=DATA, output_dir=str(tmp_path))  # 8 + 4 (+4 pad)
  assert result["scoring"] == "token_classifier" and result["num_examples"] == count
  metrics, records = read_outputs(tmp_path)
  assert metrics == pytest.approx(result) and len(records) == count
  # Gold word tags from dev.json (characters that vanish in WordPiece carry no label), predictions by the lookup.
  gold = [[t for w, t in zip(words, tags) if vocabulary.encode(w)] for words, tags in sentences]
  expected = [[tag_of.get(vocabulary.encode(w)[0], "O") for w in words if vocabulary.encode(w)]
              for words, _ in sentences]
  assert [r["target"] for r in records] == gold
  assert [r["prediction"] for r in records] == expected
  real = [len(ex["input_ids"]) for ex in registry.task_dataset(task, "validation", NER_LENGTHS, data_dir=DATA)
          .take(count).as_numpy_iterator()]
  assert [len(r["output"]) for r in records] == real  # the raw tag id of every real token
  fixed_dir = tmp_path / "fixed_padding"
  fixed = evaluator.evaluate(model, params, task_name=task, split="validation", feature_lengths=NER_LENGTHS,
                             batch_size=8, max_examples=count, data_dir=DATA, output_dir=str(fixed_dir), buckets=None)
  assert fixed == result and read_outputs(fixed_dir)[1] == records  # length buckets change nothing
  independent = metrics_lib.span_f1(gold, [r["prediction"] for r in records])
  assert {k: result[k] for k in ("precision", "recall", "f1")} == pytest.approx(independent)
  assert 0 < result["f1"] < 100
  with pytest.raises(ValueError, match=r"bert_cluener has 21 tags, but the model's classifier has 2 outputs "
                                       r"\(set NUM_LABELS = 21\)"):
    small = model.clone(config=dataclasses.replace(model.config, num_labels=2))
    evaluator.evaluate(small, {**params, "classifier": {"kernel": params["classifier"]["kernel"][:, :2],
                                                        "bias": params["classifier"]["bias"][:2]}},
                       task_name=task, split="validation", feature_lengths=NER_LENGTHS, batch_size=4, max_examples=4,
                       data_dir=DATA)


def assert_same_records(bucketed, fixed):
  """predictions.jsonl of a bucketed and a fixed-padding evaluation: same examples, order and predictions;
  scores equal up to the order of float sums."""
  assert len(bucketed) == len(fixed)
  for b, f in zip(bucketed, fixed):
    scores_b, scores_f = b.pop("score", b.pop("scores", None)), f.pop("score", f.pop("scores", None))
    assert b == f
    if scores_f is not None:
      np.testing.assert_allclose(scores_b, scores_f, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_length_buckets_change_no_prediction(t5_tasks, t5_model, minilm_dir, tmp_path):
  model, params = t5_model
  lengths = {"inputs": 256, "targets": 4}
  t5_common = dict(split="validation", feature_lengths=lengths, batch_size=4, max_examples=10)
  data = evaluator.load_eval_data(t5_tasks["rte"], "validation", lengths, 4, max_examples=10)
  widths = [b["encoder_input_tokens"].shape[1] for b in data.batches]
  assert len(set(widths)) > 1 and widths == sorted(widths)  # cut to buckets, in length order
  assert sorted(data.order.tolist()) == list(range(10))
  runs = {"rank": dict(task_name=t5_tasks["cb"]),
          "generate": dict(task_name=t5_tasks["rte"], scoring="generate", max_decode_length=3),
          "beam": dict(task_name=t5_tasks["rte"], scoring="generate", max_decode_length=3, num_beams=2)}
  for name, kwargs in runs.items():
    results = [evaluator.evaluate(model, params, output_dir=str(tmp_path / f"{name}_{b}"), buckets=b, **kwargs,
                                  **t5_common) for b in (None, buckets_lib.LengthBuckets(min_length=8))]
    assert results[0] == pytest.approx(results[1]), name
    assert_same_records(read_outputs(tmp_path / f"{name}_None")[1], read_outputs(
        tmp_path / f"{name}_{buckets_lib.LengthBuckets(min_length=8)}")[1])
  for b in (None, buckets_lib.LengthBuckets()):
    evaluator.evaluate_ensemble_dataset(model, params, 2, output_dir=str(tmp_path / f"ensemble_{b}"), buckets=b,
                                        task_name=t5_tasks["cb"], **t5_common)
  assert_same_records(read_outputs(tmp_path / "ensemble_None")[1],
                      read_outputs(tmp_path / f"ensemble_{buckets_lib.LengthBuckets()}")[1])
  base_model, base = hf_bert.load_hf_bert(minilm_dir)
  bert_model = bert.BertForSequenceClassification(dataclasses.replace(base_model.config, num_labels=2))
  rng = np.random.default_rng(0)
  bert_params = {"bert": base, "classifier": {"kernel": rng.normal(0, 1, (384, 2)).astype(np.float32),
                                              "bias": np.zeros(2, np.float32)}}
  for b in (None, buckets_lib.LengthBuckets()):
    evaluator.evaluate(bert_model, bert_params, task_name="bert_glue_sst2", split="validation",
                       feature_lengths={"input_ids": 64}, batch_size=8, max_examples=24, data_dir=DATA,
                       output_dir=str(tmp_path / f"bert_{b}"), buckets=b)
  assert_same_records(read_outputs(tmp_path / "bert_None")[1],
                      read_outputs(tmp_path / f"bert_{buckets_lib.LengthBuckets()}")[1])
