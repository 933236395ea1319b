"""Registered seqio tasks end to end: T5 / taskless formats with a SentencePiece model trained here, BERT ids
against transformers, the trainer API (model_dataset, label_strings, task_metrics) and postprocessing."""
import itertools
import json
import os

import numpy as np
import pytest
import seqio
import sentencepiece
import tensorflow as tf
import transformers

import tasks  # noqa: F401  (registers every task)
from tasks import data_dir
from tasks import formats
from tasks import registry
from tasks import sources
from tasks import vocabularies

DATA = data_dir.SHARED_DATA_DIR
LENGTHS = {"inputs": 256, "targets": 8}


@pytest.fixture(scope="module")
def spm_vocabulary(tmp_path_factory):
  """A ~500-piece SentencePiece model trained on SST-2 / RTE text (T5's ids: pad 0, eos 1, unk 2)."""
  directory = tmp_path_factory.mktemp("spm")
  text = directory / "text.txt"
  with open(os.path.join(DATA, "glue/RTE/dev.tsv"), encoding="utf-8") as rte, \
       open(os.path.join(DATA, "glue/SST-2/dev.tsv"), encoding="utf-8") as sst2:
    text.write_text("".join(itertools.chain(rte, sst2)) + "entailment not_entailment sentence1: sentence2:\n" * 20)
  sentencepiece.SentencePieceTrainer.train(input=str(text), model_prefix=str(directory / "spm"), vocab_size=500,
                                           pad_id=0, eos_id=1, unk_id=2, bos_id=-1, model_type="unigram",
                                           minloglevel=2)
  return seqio.SentencePieceVocabulary(str(directory / "spm.model"))


@pytest.fixture
def registered():
  """Registers test tasks; removes them afterwards, so no global state leaks into other tests."""
  names = []

  def register(dataset, family, **kwargs):
    name = f"test_{family}_{dataset}"
    names.append(name)
    return registry.register_task(dataset, family, name=name, data_dir=DATA, **kwargs)
  yield register
  for name in names:
    registry.remove_task(name)


def _first(task: seqio.Task, lengths=LENGTHS, n=1, split="validation") -> list[dict]:
  return list(task.get_dataset(sequence_length=lengths, split=split, shuffle=False).take(n).as_numpy_iterator())


def test_every_task_is_registered():
  names = set(registry.task_names())
  assert len(names) == 73 and names <= set(seqio.TaskRegistry.names())
  for dataset in ("glue_sst2", "super_glue_rte", "clue_afqmc"):
    assert {dataset, f"{dataset}_taskless", f"bert_{dataset}"} <= names
  assert {"super_glue_record", "bert_conll2003_ner", "bert_cluener"} <= names and "bert_super_glue_record" not in names


def test_t5_task_end_to_end(spm_vocabulary, registered):
  task = registered("glue_rte", registry.T5, vocabulary=spm_vocabulary)
  example = _first(seqio.get_mixture_or_task(task.name))[0]
  expected_inputs = ("rte sentence1: Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at "
                     "age 44, according to the Christopher Reeve Foundation. sentence2: Christopher Reeve had an "
                     "accident.")
  assert example["inputs_pretokenized"].decode() == expected_inputs
  assert example["targets_pretokenized"] == b"not_entailment"
  assert example["inputs"][-1] == 1 and example["targets"][-1] == 1  # EOS
  np.testing.assert_array_equal(example["inputs"][:-1], spm_vocabulary.encode(expected_inputs))
  assert spm_vocabulary.decode(example["targets"].tolist()) == "not_entailment"


def test_taskless_variant_drops_the_first_word(spm_vocabulary, registered):
  full = _first(registered("super_glue_cb", registry.T5, vocabulary=spm_vocabulary), n=3)
  taskless = _first(registered("super_glue_cb", registry.T5_TASKLESS, vocabulary=spm_vocabulary), n=3)
  for with_name, without in zip(full, taskless):
    assert with_name["inputs_pretokenized"].decode() == "cb " + without["inputs_pretokenized"].decode()
    assert without["inputs_pretokenized"].startswith(b"hypothesis: ")
    assert with_name["targets_pretokenized"] == without["targets_pretokenized"]


@pytest.mark.parametrize("dataset,inputs_start,target", [
    ("super_glue_boolq", "boolq passage: Ethanol fuel -- All biomass", "False"),
    ("super_glue_copa", "copa choice1: The toilet filled with water. choice2: Water flowed from the spout. premise: "
                        "The man turned on the faucet. question: effect", "choice2"),
    ("super_glue_wic", "wic sentence1: An emerging professional class. sentence2: Apologizing", "False"),
    ("super_glue_multirc", "multirc question: Would the mass of a baseball affect how much force you have to use to "
                           "pick it up? answer: No paragraph: What causes", "False"),
    ("glue_sst2", "sst2 sentence: it 's a charming and often affecting journey .", "positive"),
    ("glue_mrpc", "mrpc sentence1: He said the foodservice pie business", "equivalent"),
    ("glue_cola", "cola sentence: The sailors rode the breeze clear of the rocks.", "acceptable"),
    ("clue_tnews", "tnews sentence: 江疏影甜甜圈自拍", "entertainment"),
    ("clue_cmnli", "cmnli sentence1: 新的权利已经足够好了 sentence2: 每个人都很喜欢最新的福利", "neutral"),
])
def test_t5_text_formats(dataset, inputs_start, target):
  spec = registry.DATASETS[dataset]
  raw = sources.LocalOrTfdsSource(dataset, spec, data_dir=DATA).get_dataset("validation", shuffle=False)
  example = next(formats.t5_preprocessor(formats.FORMATS[dataset], spec.features)(raw).as_numpy_iterator())
  assert example["inputs"].decode().startswith(inputs_start) and example["targets"].decode() == target


def test_wsc_marks_spans_by_position():
  example = {"text": tf.constant("Mark told Pete many lies about himself , which Pete included in his book ."),
             "span1_index": tf.constant(2), "span1_text": tf.constant("Pete"),
             "span2_index": tf.constant(12), "span2_text": tf.constant("his")}
  assert formats.mark_spans(example).numpy().decode() == (
      "Mark told * Pete * many lies about himself , which Pete included in # his # book .")
  chinese = {"text": tf.constant("这时候放在床上枕头旁边的手机响了"), "span1_index": tf.constant(5),
             "span1_text": tf.constant("床"), "span2_index": tf.constant(12), "span2_text": tf.constant("手机")}
  assert formats.mark_spans(chinese, by_character=True).numpy().decode() == "这时候放在*床*上枕头旁边的#手机#响了"


def test_record_and_stsb_from_official_files(tmp_path, registered, spm_vocabulary):
  (tmp_path / "super_glue" / "ReCoRD").mkdir(parents=True)
  text = "Paris is nice.\n@highlight\nThe Eiffel Tower is in Paris"
  spans = [{"start": start, "end": start + len(entity) - 1, "text": entity}  # inclusive ends, as ReCoRD
           for entity, start in (("Paris", 0), ("Eiffel Tower", text.index("Eiffel")), ("Paris", text.rindex("Paris")))]
  passage = {"text": text, "entities": [{"start": s["start"], "end": s["end"]} for s in spans]}
  record = {"idx": 7, "passage": passage, "qas": [{"idx": 3, "query": "@placeholder is in France.", "answers": spans}]}
  (tmp_path / "super_glue" / "ReCoRD" / "val.jsonl").write_text(json.dumps(record) + "\n")
  (tmp_path / "glue" / "STS-B").mkdir(parents=True)
  (tmp_path / "glue" / "STS-B" / "dev.tsv").write_text(
      "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
      "0\tmain\tf\t2012\t1\tnone\tnone\tA man plays.\tA man is playing.\t3.875\n")
  with data_dir.using_data_dir(str(tmp_path)):
    task = registry.register_task("super_glue_record", registry.T5, name="test_t5_record",
                                  vocabulary=spm_vocabulary)
    try:
      examples = _first(task, n=5)
    finally:
      registry.remove_task("test_t5_record")
    stsb = registry.DATASETS["glue_stsb"]
    raw = sources.LocalOrTfdsSource("glue_stsb", stsb).get_dataset("validation", shuffle=False)
    stsb_example = next(formats.t5_preprocessor(formats.FORMATS["glue_stsb"], stsb.features)(raw).as_numpy_iterator())
  assert [e["targets_pretokenized"] for e in examples] == [b"Eiffel Tower", b"Paris"]  # one per unique answer
  assert examples[0]["inputs_pretokenized"].decode() == (
      "record query: @placeholder is in France. entities: Eiffel Tower, Paris passage: Paris is nice. The Eiffel "
      "Tower is in Paris")
  assert examples[0]["idx/passage"] == 7 and examples[0]["idx/query"] == 3
  assert stsb_example["inputs"] == b"stsb sentence1: A man plays. sentence2: A man is playing."
  assert stsb_example["targets"] == b"3.8"


def test_bert_tasks_match_transformers():
  tokenizer = transformers.BertTokenizer(vocab=vocabularies.minilm_vocab_path())
  for task_name, keys, length in (("bert_glue_rte", ("sentence1", "sentence2"), 48),
                                  ("bert_glue_sst2", ("sentence",), 16),
                                  ("bert_clue_afqmc", ("sentence1", "sentence2"), 24)):
    spec = registry.DATASETS[task_name[len("bert_"):]]
    raw = list(sources.LocalOrTfdsSource(task_name, spec, data_dir=DATA).get_dataset(
        "validation", shuffle=False).take(6).as_numpy_iterator())
    got = registry.task_dataset(task_name, "validation", {"input_ids": length}, data_dir=DATA).take(6)
    for source, example in zip(raw, got.as_numpy_iterator()):
      reference = tokenizer(*[source[k].decode() for k in keys], truncation=True, max_length=length)
      for feature in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(example[feature], reference[feature], err_msg=f"{task_name} {feature}")
      assert example["labels"] == source["label"]


def test_bert_ner_matches_transformers_word_alignment():
  tokenizer = transformers.BertTokenizer(vocab=vocabularies.minilm_vocab_path())
  raw = sources.LocalOrTfdsSource("cluener", registry.DATASETS["cluener"], data_dir=DATA).get_dataset(
      "validation", shuffle=False)
  got = registry.model_dataset("bert_cluener", "validation", {"input_ids": 40}, data_dir=DATA)
  for source, example in itertools.islice(zip(raw.as_numpy_iterator(), got.as_numpy_iterator()), 5):
    words = [w.decode() for w in source["tokens"]]
    reference = tokenizer(words, is_split_into_words=True, truncation=True, max_length=40)
    n = len(reference["input_ids"])
    np.testing.assert_array_equal(example["input_ids"][:n], reference["input_ids"])
    assert not example["input_ids"][n:].any() and example["attention_mask"].sum() == n
    previous = None
    expected = []
    for word in reference.word_ids():  # HF recipe: label on the first piece of each word
      expected.append(-100 if word is None or word == previous else int(source["ner"][word]))
      previous = word
    np.testing.assert_array_equal(example["labels"][:n], expected)
    assert (example["labels"][n:] == -100).all()


def test_model_dataset_for_t5_and_bert(spm_vocabulary, registered):
  task = registered("glue_mrpc", registry.T5_TASKLESS, vocabulary=spm_vocabulary)
  batch = next(registry.model_dataset(task.name, "validation", {"inputs": 64, "targets": 8}, batch_size=4)
               .as_numpy_iterator())
  assert {k: v.shape for k, v in batch.items()} == {
      "encoder_input_tokens": (4, 64), "decoder_input_tokens": (4, 8), "decoder_target_tokens": (4, 8),
      "decoder_loss_weights": (4, 8)}
  bert = next(registry.model_dataset("bert_glue_mrpc", "validation", {"input_ids": 32}, batch_size=4,
                                     data_dir=DATA).as_numpy_iterator())
  assert bert["input_ids"].shape == (4, 32) and bert["labels"].tolist() == [1, 0, 0, 1]
  assert bert["input_ids"][:, 0].tolist() == [101] * 4 and bert["token_type_ids"].max() == 1


def test_seqio_evaluator_scores_decoded_predictions(spm_vocabulary, registered):
  task = registered("super_glue_cb", registry.T5_TASKLESS, vocabulary=spm_vocabulary)
  evaluator = seqio.Evaluator(task.name, seqio.EncDecFeatureConverter(pack=False), sequence_length=LENGTHS,
                              async_compute_metrics=False)

  invalid = np.pad(spm_vocabulary.encode("maybe") + [1], (0, LENGTHS["targets"]))[:LENGTHS["targets"]]

  def predict_fn(dataset):  # a perfect model, except for one invalid output; [targets] ids as t5x returns them
    return [(index, invalid if index == 0 else example["decoder_target_tokens"])
            for index, example in dataset.as_numpy_iterator()]
  scores, _ = evaluator.evaluate(compute_metrics=True, predict_fn=predict_fn)
  scores = scores.result()[task.name]
  assert scores["accuracy"] == pytest.approx(100 * 55 / 56)
  assert 90 < scores["mean_3class_f1"] < 100


def test_labels_metrics_and_postprocessing_api():
  assert registry.label_strings("glue_sst2_taskless") == ["negative", "positive"]
  assert registry.label_strings("bert_glue_mrpc") == ["not_equivalent", "equivalent"]
  stsb = registry.label_strings("glue_stsb")
  assert stsb[:3] == ["0.0", "0.2", "0.4"] and stsb[-1] == "5.0" and len(stsb) == 26
  assert registry.label_strings("super_glue_record") is None
  assert registry.label_strings("bert_conll2003_ner")[:3] == ["O", "B-PER", "I-PER"]
  assert [f([1, 0], [1, 1]) for f in registry.task_metrics("glue_cola")] == [{"matthews_corrcoef": 0.0}]
  task = seqio.get_mixture_or_task("glue_mrpc")
  targets = [task.postprocess_fn(t, example={}, is_target=True) for t in (b"equivalent", b"not_equivalent")]
  predictions = [task.postprocess_fn(p, example={}) for p in ("equivalent", "maybe")]  # 'maybe' is invalid
  scores = {k: v for f in registry.task_metrics("glue_mrpc") for k, v in f(targets, predictions).items()}
  assert targets == [1, 0] and predictions == [1, -1]
  assert scores == pytest.approx({"f1": 200 / 3, "accuracy": 50.0})  # the invalid one counts as a false positive
  with pytest.raises(KeyError, match="unknown task 'glue_nope'"):
    registry.label_strings("glue_nope")


def test_registered_task_reports_missing_local_split():
  with pytest.raises(FileNotFoundError, match=r"super_glue_boolq_taskless split 'train': .*BoolQ/train.jsonl"):
    registry.task_dataset("super_glue_boolq_taskless", "train", LENGTHS, data_dir=DATA)
