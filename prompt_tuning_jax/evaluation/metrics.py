"""Benchmark metrics as plain functions `(targets, predictions) -> {name: value}`, on a 0-100 scale (as T5).

Names and definitions follow the benchmarks and T5's `t5.evaluation.metrics`:
  accuracy                        SST-2, RTE, QNLI, MNLI, BoolQ, COPA, WiC, WSC, CLUE ...
  f1_with_invalid                 MRPC, QQP: F1 of the positive class 1
  matthews_corrcoef               CoLA
  pearson_corrcoef, spearman_corrcoef   STS-B
  mean_multiclass_f1(3)           CB: unweighted mean of the per-class F1 ('mean_3class_f1')
  multirc_f1a, multirc_exact_match      MultiRC: F1 over all answer options; per-question all-correct rate
  record_em_f1                    ReCoRD: SQuAD-normalised EM / token F1, max over the gold answers
  span_f1                         NER: entity-level precision / recall / F1 over exact spans (seqeval's default
                                  IOB2 chunking, i.e. conlleval's: an I-X after O or another type opens a span)
An invalid prediction (postprocessors.INVALID: generated text that is no label) always counts as wrong: binary
metrics replace it by the opposite of the target (T5's `f1_score_with_invalid`), class metrics never match it.
"""
import collections
import re
import string
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import scipy.stats

Metrics = dict[str, float]


def _binary(targets, predictions) -> tuple[np.ndarray, np.ndarray]:
  """int arrays with invalid predictions (anything but 0/1) flipped to the wrong class."""
  targets, predictions = np.asarray(targets, np.int64), np.asarray(predictions, np.int64).copy()
  invalid = (predictions != 0) & (predictions != 1)
  predictions[invalid] = 1 - targets[invalid]
  return targets, predictions


def _f1(true_positives: int, false_positives: int, false_negatives: int) -> float:
  denominator = 2 * true_positives + false_positives + false_negatives
  return 2 * true_positives / denominator if denominator else 0.0


def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> Metrics:
  return {"accuracy": 100 * float(np.mean([t == p for t, p in zip(targets, predictions, strict=True)]))}


def f1_with_invalid(targets: Sequence[int], predictions: Sequence[int]) -> Metrics:
  """Binary F1 of class 1; invalid predictions count as wrong."""
  t, p = _binary(targets, predictions)
  return {"f1": 100 * _f1(int(np.sum((p == 1) & (t == 1))), int(np.sum((p == 1) & (t == 0))),
                          int(np.sum((p == 0) & (t == 1))))}


def matthews_corrcoef(targets: Sequence[int], predictions: Sequence[int]) -> Metrics:
  """Binary MCC (0 when a row or column of the confusion matrix is empty, as sklearn)."""
  t, p = _binary(targets, predictions)
  tp, tn = float(np.sum((p == 1) & (t == 1))), float(np.sum((p == 0) & (t == 0)))
  fp, fn = float(np.sum((p == 1) & (t == 0))), float(np.sum((p == 0) & (t == 1)))
  denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return {"matthews_corrcoef": 100 * ((tp * tn - fp * fn) / denominator if denominator else 0.0)}


def pearson_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> Metrics:
  return {"pearson_corrcoef": 100 * float(scipy.stats.pearsonr(targets, predictions)[0])}


def spearman_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> Metrics:
  return {"spearman_corrcoef": 100 * float(scipy.stats.spearmanr(targets, predictions)[0])}


def mean_multiclass_f1(num_classes: int) -> Callable[[Sequence[int], Sequence[int]], Metrics]:
  """Macro F1 over classes 0..num_classes-1 (an invalid prediction is a false negative only)."""
  def metric(targets: Sequence[int], predictions: Sequence[int]) -> Metrics:
    t, p = np.asarray(targets), np.asarray(predictions)
    scores = [_f1(int(np.sum((p == c) & (t == c))), int(np.sum((p == c) & (t != c))), int(np.sum((p != c) & (t == c))))
              for c in range(num_classes)]
    return {f"mean_{num_classes}class_f1": 100 * float(np.mean(scores))}
  return metric


def _value(prediction: Any) -> Any:
  return prediction["value"] if isinstance(prediction, Mapping) else prediction


def multirc_f1a(targets: Sequence[Mapping[str, Any]], predictions: Sequence[Any]) -> Metrics:
  """F1 over all answer options. targets: {'group', 'value'}; predictions: values or {'value'}."""
  return {"f1a": f1_with_invalid([t["value"] for t in targets], [_value(p) for p in predictions])["f1"]}


def multirc_exact_match(targets: Sequence[Mapping[str, Any]], predictions: Sequence[Any]) -> Metrics:
  """Share of questions (groups) whose answer options are all classified correctly."""
  correct: dict[Any, bool] = {}
  for target, prediction in zip(targets, predictions, strict=True):
    correct[target["group"]] = correct.get(target["group"], True) and target["value"] == _value(prediction)
  return {"exact_match": 100 * float(np.mean(list(correct.values())))}


def normalize_squad(text: str) -> str:
  """SQuAD's answer normalisation: lower case, drop punctuation and articles, squeeze whitespace."""
  text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
  return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _token_f1(prediction: str, answer: str) -> float:
  predicted, gold = prediction.split(), answer.split()
  common = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
  return 2 * common / (len(predicted) + len(gold)) if common else 0.0


def record_em_f1(targets: Sequence[Mapping[str, Any]], predictions: Sequence[Any]) -> Metrics:
  """ReCoRD/SQuAD EM and F1, max over gold answers, one score per query.

  targets: {'group': query id, 'value': [answers]} (repeated once per answer in the data: only the first copy
  of each group counts, as T5's `deduplicate_metric`); predictions: strings or {'value': string}.
  """
  em, f1, seen = [], [], set()
  for target, prediction in zip(targets, predictions, strict=True):
    if target["group"] in seen:
      continue
    seen.add(target["group"])
    predicted = normalize_squad(_value(prediction))
    answers = [normalize_squad(a) for a in target["value"]] or [""]
    em.append(max(float(predicted == a) for a in answers))
    f1.append(max(_token_f1(predicted, a) for a in answers))
  return {"em": 100 * float(np.mean(em)), "f1": 100 * float(np.mean(f1))}


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
  """(type, first, last) of each IOB2 entity; an I-X that does not continue an X span opens one (seqeval)."""
  spans, start, current = set(), 0, None
  for position, tag in enumerate([*tags, "O"]):
    prefix, _, entity_type = tag.partition("-")
    continues = prefix == "I" and entity_type == current
    if current is not None and not continues:
      spans.add((current, start, position - 1))
      current = None
    if prefix in ("B", "I") and not continues:
      start, current = position, entity_type
  return spans


def span_f1(targets: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> Metrics:
  """Micro precision / recall / F1 over exact entity spans; targets and predictions are tag sequences."""
  true_spans = {(i, *span) for i, tags in enumerate(targets) for span in entity_spans(tags)}
  predicted_spans = {(i, *span) for i, tags in enumerate(predictions) for span in entity_spans(tags)}
  correct = len(true_spans & predicted_spans)
  precision = correct / len(predicted_spans) if predicted_spans else 0.0
  recall = correct / len(true_spans) if true_spans else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1}
