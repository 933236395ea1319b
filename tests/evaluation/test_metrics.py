"""Metrics against scipy / numpy references and hand-computed examples; postprocessors' invalid sentinel."""
import numpy as np
import pytest
import scipy.stats

from prompt_tuning_jax.evaluation import metrics
from prompt_tuning_jax.evaluation import postprocessors

RNG = np.random.default_rng(0)
BINARY_TARGETS = RNG.integers(0, 2, 200)
BINARY_PREDICTIONS = np.where(RNG.random(200) < 0.7, BINARY_TARGETS, 1 - BINARY_TARGETS)


def test_accuracy_and_binary_f1_by_hand():
  targets, predictions = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]  # tp 2, fp 1, fn 1, tn 1
  assert metrics.accuracy(targets, predictions) == {"accuracy": 60.0}
  assert metrics.f1_with_invalid(targets, predictions)["f1"] == pytest.approx(100 * 2 * 2 / (2 * 2 + 1 + 1))


def test_invalid_predictions_count_as_wrong():
  targets = [1, 0, 1, 0]
  predictions = [postprocessors.INVALID] * 4
  assert metrics.accuracy(targets, predictions)["accuracy"] == 0.0
  assert metrics.f1_with_invalid(targets, predictions)["f1"] == 0.0  # each invalid -> the opposite class
  assert metrics.matthews_corrcoef(targets, predictions)["matthews_corrcoef"] == pytest.approx(-100.0)
  assert metrics.mean_multiclass_f1(2)(targets, predictions)["mean_2class_f1"] == 0.0


def test_matthews_corrcoef_equals_pearson_of_binary_vectors():
  # For 0/1 vectors MCC is the phi coefficient, i.e. Pearson's r (an independent reference).
  expected = 100 * np.corrcoef(BINARY_TARGETS, BINARY_PREDICTIONS)[0, 1]
  got = metrics.matthews_corrcoef(BINARY_TARGETS, BINARY_PREDICTIONS)["matthews_corrcoef"]
  assert got == pytest.approx(expected, abs=1e-9)
  assert metrics.matthews_corrcoef([1, 1, 1], [1, 1, 1])["matthews_corrcoef"] == 0.0  # degenerate, as sklearn


def test_binary_f1_matches_counts():
  t, p = BINARY_TARGETS, BINARY_PREDICTIONS
  tp, fp, fn = np.sum((p == 1) & (t == 1)), np.sum((p == 1) & (t == 0)), np.sum((p == 0) & (t == 1))
  precision, recall = tp / (tp + fp), tp / (tp + fn)
  assert metrics.f1_with_invalid(t, p)["f1"] == pytest.approx(100 * 2 * precision * recall / (precision + recall))


def test_correlations_against_scipy_and_ranks():
  targets = RNG.random(50) * 5
  predictions = targets + RNG.normal(0, 1, 50)
  assert metrics.pearson_corrcoef(targets, predictions)["pearson_corrcoef"] == pytest.approx(
      100 * np.corrcoef(targets, predictions)[0, 1])
  ranks = np.corrcoef(scipy.stats.rankdata(targets), scipy.stats.rankdata(predictions))[0, 1]
  assert metrics.spearman_corrcoef(targets, predictions)["spearman_corrcoef"] == pytest.approx(100 * ranks)


def test_cb_macro_f1_by_hand():
  targets = [0, 0, 1, 1, 2, 2]
  predictions = [0, 1, 1, 1, 0, -1]
  # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fn2 -> 0
  expected = 100 * (0.5 + 0.8 + 0.0) / 3
  assert metrics.mean_multiclass_f1(3)(targets, predictions)["mean_3class_f1"] == pytest.approx(expected)


def test_multirc_f1a_and_exact_match_by_hand():
  targets = [{"group": (0, 0), "value": 1}, {"group": (0, 0), "value": 0},
             {"group": (0, 1), "value": 1}, {"group": (0, 1), "value": 1},
             {"group": (1, 2), "value": 0}]
  predictions = [1, 0, 1, 0, postprocessors.INVALID]
  # all answers: tp 2, fn 1, fp 1 (the invalid one on a 0 target becomes 1) -> F1 = 4 / 6
  assert metrics.multirc_f1a(targets, predictions)["f1a"] == pytest.approx(100 * 4 / 6)
  # questions: (0,0) right, (0,1) wrong, (1,2) wrong
  assert metrics.multirc_exact_match(targets, [{"value": v} for v in predictions])["exact_match"] == pytest.approx(
      100 / 3)


def test_record_em_f1_with_squad_normalisation_and_dedup():
  targets = [{"group": (0, 0), "value": ["The Eiffel Tower", "Eiffel"]},
             {"group": (0, 0), "value": ["The Eiffel Tower", "Eiffel"]},  # same query, second answer copy
             {"group": (0, 1), "value": ["Barack Obama"]}]
  predictions = ["eiffel tower!", "ignored duplicate", "Obama"]
  result = metrics.record_em_f1(targets, predictions)
  # query 1: 'eiffel tower' == normalised 'eiffel tower' -> EM 1, F1 1; query 2: EM 0, F1 = 2*1/(1+2)
  assert result["em"] == pytest.approx(50.0)
  assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
  assert metrics.normalize_squad("  The  cat, an apple; A dog. ") == "cat apple dog"


def test_span_f1_by_hand_and_seqeval_chunking():
  targets = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O"]]
  predictions = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O", "O"]]
  # true spans: PER(0,1) LOC(3) ORG(0,2); predicted: PER(0,1) ORG(3) ORG(0,1) -> 1 correct of 3 / 3
  result = metrics.span_f1(targets, predictions)
  assert result == pytest.approx({"precision": 100 / 3, "recall": 100 / 3, "f1": 100 / 3})
  # seqeval's default (conlleval) chunking: an I- after O or after another type opens a new span
  assert metrics.entity_spans(["O", "I-PER", "I-PER", "I-LOC", "B-LOC", "I-LOC"]) == {
      ("PER", 1, 2), ("LOC", 3, 3), ("LOC", 4, 5)}
  assert metrics.span_f1([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_postprocessors():
  to_id = postprocessors.string_label_to_class_id(("negative", "positive"))
  assert [to_id(b"positive"), to_id("negative"), to_id("great")] == [1, 0, postprocessors.INVALID]
  assert postprocessors.string_to_float("3.8") == 3.8 and postprocessors.string_to_float("high") == -1.0
  example = {"idx/paragraph": np.int32(3), "idx/question": np.int32(7), "answers": [b"A", b"B"],
             "idx/passage": np.int32(1), "idx/query": np.int32(2), "labels": np.int32(4)}
  assert postprocessors.multirc(b"True", example=example, is_target=True) == {"value": 1, "group": (3, 7)}
  assert postprocessors.record(b"A", example=example, is_target=True) == {"value": ["A", "B"], "group": (1, 2)}
  assert postprocessors.bert_class("stsb")(np.int64(19)) == pytest.approx(3.8)
  assert postprocessors.bert_class()(None, example=example, is_target=True) == 4
  targets, predicted = postprocessors.word_tags([[-100, 1, -100, 2, -100]], [[0, 1, 2, 0, 0]], ("O", "B-X", "I-X"))
  assert targets == [["B-X", "I-X"]] and predicted == [["B-X", "O"]]
