"""Model outputs -> the values the metrics compare (seqio's `postprocess_fn(output, example=, is_target=)`).

Generated text that is no label becomes `INVALID` (-1), which every metric counts as wrong (Lester et al.
score the decoded string, so an invalid label is an error). Targets come from the example where the text alone
is not enough (MultiRC's question group, ReCoRD's full answer list, BERT's label ids, NER's labelled words).
"""
from typing import Any, Callable, Mapping, Sequence

import numpy as np

INVALID = -1
IGNORE_LABEL = -100  # BERT label positions without a label (tasks/formats.py)
Postprocessor = Callable[..., Any]


def _text(output: Any) -> str:
  return output.decode("utf-8") if isinstance(output, bytes) else str(output)


def string_label_to_class_id(label_strings: Sequence[str]) -> Postprocessor:
  """Text -> index in `label_strings` (exact match after stripping spaces), else INVALID."""
  def postprocess(output: Any, example: Mapping[str, Any] | None = None, is_target: bool = False) -> int:
    del example, is_target
    text = _text(output).strip()
    return label_strings.index(text) if text in label_strings else INVALID
  return postprocess


def string_to_float(output: Any, example: Mapping[str, Any] | None = None, is_target: bool = False) -> float:
  """STS-B: text -> float, INVALID when it is not a number."""
  del example, is_target
  try:
    return float(_text(output))
  except ValueError:
    return float(INVALID)


def _group(example: Mapping[str, Any], *keys: str) -> tuple:
  return tuple(np.asarray(example[key]).item() for key in keys)


def multirc(output: Any, example: Mapping[str, Any] | None = None, is_target: bool = False) -> dict[str, Any]:
  """{'value': 0/1/INVALID} (+ 'group' = (paragraph, question) for targets)."""
  value = string_label_to_class_id(("False", "True"))(output)
  return {"value": value, "group": _group(example, "idx/paragraph", "idx/question")} if is_target else {"value": value}


def record(output: Any, example: Mapping[str, Any] | None = None, is_target: bool = False) -> dict[str, Any]:
  """{'value': text}; targets: {'value': all gold answers, 'group': (passage, query)}."""
  if is_target:
    return {"value": [_text(a) for a in example["answers"]], "group": _group(example, "idx/passage", "idx/query")}
  return {"value": _text(output)}


def bert_class(kind: str = "class") -> Postprocessor:
  """BERT classifier outputs: `output` is the predicted class id; targets read `example['labels']`.

  kind: 'class' (ids as they are), 'stsb' (bin id -> score id/5) or 'multirc' (MultiRC's grouped dicts).
  """
  def postprocess(output: Any, example: Mapping[str, Any] | None = None, is_target: bool = False) -> Any:
    value = int(np.asarray(example["labels"] if is_target else output).item())
    if kind == "stsb":
      return value / 5
    if kind == "multirc":
      return {"value": value, "group": _group(example, "idx/paragraph", "idx/question")} if is_target else value
    return value
  return postprocess


def word_tags(label_ids: Sequence[Sequence[int]], predicted_ids: Sequence[Sequence[int]],
              tag_names: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
  """Token-classification ids [n, l] -> word-level (targets, predictions) tag sequences for `metrics.span_f1`.

  Only positions whose label is not IGNORE_LABEL are kept: the first WordPiece of each word (tasks/ner.py).
  A prediction row may be shorter than its label row (a batch cut to a length bucket) where only padding
  was cut.
  """
  targets, predictions = [], []
  for labels, predicted in zip(label_ids, predicted_ids, strict=True):
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    keep = np.flatnonzero(labels != IGNORE_LABEL)  # [words] positions
    targets.append([tag_names[i] for i in labels[keep]])
    predictions.append([tag_names[i] if 0 <= i < len(tag_names) else "O" for i in predicted[keep]])
  return targets, predictions


def bert_word_tags(tag_names: Sequence[str]) -> Postprocessor:
  """BERT token-classification outputs: `output` is the predicted tag id of every token [l]; targets read
  `example['labels']` [l]. Both become the word-level tag names of `word_tags` (one per labelled word)."""
  def postprocess(output: Any, example: Mapping[str, Any] | None = None, is_target: bool = False) -> list[str]:
    labels = np.asarray(example["labels"])
    targets, predictions = word_tags([labels], [labels if is_target else np.asarray(output)], tag_names)
    return targets[0] if is_target else predictions[0]
  return postprocess
