"""Text formats: T5's text-to-text strings, the taskless variant, and BERT's [CLS] a [SEP] b [SEP] encoding.

T5 (as `t5.data.preprocessors.glue` and `t5.data.glue_utils`): the benchmark name, then `key: value` for each text
feature in sorted order (MultiRC: question, answer, paragraph; WiC: sentence1, sentence2, word), and the label
string as the target; -1 (unlabeled) gives the target '<unk>'. For example
  rte sentence1: ... sentence2: ...                   -> entailment | not_entailment      (GLUE RTE)
  rte hypothesis: ... premise: ...                    -> entailment | not_entailment      (SuperGLUE RTE)
  boolq passage: ... question: ...                    -> False | True
  stsb sentence1: ... sentence2: ...                  -> the score rounded to 0.2, e.g. 3.8
  wsc text: ... * span1 * ... # pronoun # ...         -> False | True
  record query: ... entities: a, b passage: ...       -> one example per answer ('answers' kept for eval)
Taskless (prompt tuning, `prompt_tuning/data/preprocessors.py::remove_first_text_token`): the first
space-separated word is dropped: `sentence1: ... sentence2: ...`.

NOTE: WSC uses T5's classification format for `wsc.fixed` (T5's SuperGLUE mixture instead trains a referent
generator, `wsc_simple`); spans are marked by whitespace-token position (CLUEWSC2020: character position)
rather than by T5's regex on the span text, so a span whose text differs from the passage is still marked.
"""
import dataclasses
from typing import Callable, Mapping, Sequence

import seqio
import tensorflow as tf

from tasks import vocabularies

UNKNOWN_TARGET = "<unk>"
IGNORE_LABEL = -100  # BERT labels of unlabeled rows / positions (HF's ignore index)
STSB_LABELS = tuple(f"{i / 5:.1f}" for i in range(26))  # '0.0', '0.2', ..., '5.0'


@dataclasses.dataclass(frozen=True)
class TextFormat:
  """How one dataset becomes text.

  Attributes:
    benchmark_name: the first word of T5 inputs ('rte', 'sst2', ...).
    kind: 'glue' (key: value pairs), 'stsb', 'wsc', 'cluewsc' (character spans) or 'record'.
    label_strings: target strings in label-id order; None for ReCoRD.
    feature_names: the text features in T5 order; None = sorted text features.
    bert_segments: (segment a features, segment b features) joined with spaces; None = no BERT task.
  """
  benchmark_name: str
  kind: str = "glue"
  label_strings: tuple[str, ...] | None = None
  feature_names: tuple[str, ...] | None = None
  bert_segments: tuple[tuple[str, ...], tuple[str, ...]] | None = None


def _label_text(label: tf.Tensor, label_strings: Sequence[str]) -> tf.Tensor:
  """[] int label -> its string; -1 (unlabeled) -> '<unk>'."""
  known = tf.gather(tf.constant(list(label_strings)), tf.maximum(label, 0))
  return tf.where(label < 0, tf.constant(UNKNOWN_TARGET), known)


def _key_value_text(example: Mapping[str, tf.Tensor], names: Sequence[str], prefix: str) -> tf.Tensor:
  parts = [piece for name in names for piece in (tf.constant(f"{name}:"), example[name])]
  return tf.strings.join([tf.constant(prefix)] + parts, separator=" ")


def _clean_multirc(paragraph: tf.Tensor) -> tf.Tensor:
  """Removes MultiRC's HTML markup, as T5 does."""
  return tf.strings.regex_replace(tf.strings.regex_replace(paragraph, "<br>", " "), "<(/)?b>", "")


def mark_spans(example: Mapping[str, tf.Tensor], by_character: bool = False) -> tf.Tensor:
  """WSC text with '* span1 *' around the candidate and '# span2 #' around the pronoun.

  Span indices count whitespace tokens (CLUEWSC2020: characters); a span covers as many units as its text.
  """
  if by_character:
    units, separator = tf.strings.unicode_split(example["text"], "UTF-8"), ""
    span_length = lambda span: tf.strings.length(span, unit="UTF8_CHAR")  # noqa: E731
  else:
    units, separator = tf.strings.split(example["text"]), " "
    span_length = lambda span: tf.size(tf.strings.split(span))  # noqa: E731
  positions = tf.range(tf.size(units))
  marked = units
  for name, mark in (("span1", "*"), ("span2", "#")):
    start = tf.cast(example[f"{name}_index"], tf.int32)
    end = start + tf.maximum(span_length(example[f"{name}_text"]), 1) - 1
    marked = tf.strings.join([tf.where(positions == start, mark + separator, ""), marked,
                              tf.where(positions == end, separator + mark, "")])
  return tf.strings.reduce_join(marked, separator=separator)


def t5_preprocessor(text_format: TextFormat, features: Mapping[str, tf.TensorSpec]
                    ) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
  """Canonical examples -> {'inputs', 'targets', idx fields} (module docstring)."""
  fmt = text_format
  name = fmt.benchmark_name

  def idx_features(ex):
    if isinstance(ex["idx"], Mapping):
      return {f"idx/{key}": value for key, value in ex["idx"].items()}
    return {"idx": ex["idx"]}

  def to_text(ex):
    ex = dict(ex)
    if fmt.kind == "stsb":
      targets = tf.where(ex["label"] < 0, tf.constant(UNKNOWN_TARGET),
                         tf.strings.as_string(tf.round(ex["label"] * 5) / 5, precision=1))
      inputs = _key_value_text(ex, ("sentence1", "sentence2"), name)
    elif fmt.kind in ("wsc", "cluewsc"):
      inputs = tf.strings.join([name, "text:", mark_spans(ex, by_character=fmt.kind == "cluewsc")], separator=" ")
      targets = _label_text(ex["label"], fmt.label_strings)
    else:
      if "paragraph" in ex:
        ex["paragraph"] = _clean_multirc(ex["paragraph"])
      names = fmt.feature_names or sorted(k for k, spec in features.items()
                                          if k not in ("label", "idx") and getattr(spec, "dtype", None) == tf.string
                                          and spec.shape.rank == 0)
      inputs = _key_value_text(ex, names, name)
      targets = _label_text(ex["label"], fmt.label_strings)
    return {"inputs": inputs, "targets": targets, **idx_features(ex)}

  def to_record_text(ex):
    """One example per answer ('<unk>' when there is none), as T5's `record` preprocessor."""
    passage = tf.strings.regex_replace(ex["passage"], r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ")
    passage = tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")
    inputs = tf.strings.join([f"{name} query:", ex["query"], "entities:",
                              tf.strings.reduce_join(ex["entities"], separator=", "), "passage:", passage],
                             separator=" ")
    answers = ex["answers"]
    targets = tf.cond(tf.size(answers) > 0, lambda: answers, lambda: tf.constant([UNKNOWN_TARGET]))
    count = tf.size(targets)
    return tf.data.Dataset.from_tensor_slices({
        "inputs": tf.fill([count], inputs), "targets": targets,
        "answers": tf.repeat(answers[tf.newaxis], count, axis=0),
        **{key: tf.fill([count], value) for key, value in idx_features(ex).items()}})

  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    if fmt.kind == "record":
      return dataset.flat_map(to_record_text)
    return dataset.map(to_text, num_parallel_calls=tf.data.AUTOTUNE)
  return preprocess


@seqio.map_over_dataset
def remove_first_word(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """The taskless format: drops the leading task-name word of `inputs`."""
  return {**example, "inputs": tf.strings.regex_replace(example["inputs"], r"^[^ ]* ", "", replace_global=False)}


def truncate_pair(length_a: tf.Tensor, length_b: tf.Tensor, budget: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Kept lengths of a pair within `budget` tokens: HF tokenizers' 'longest_first' (its Rust implementation).

  The shorter segment (a on ties) keeps max(its length, budget - its length) capped so that both fit; when
  that is not possible both get half, the longer one the odd token.
  """
  swap = length_a > length_b
  n1, n2 = tf.minimum(length_a, length_b), tf.maximum(length_a, length_b)
  n2 = tf.where(n1 > budget, n1, tf.maximum(n1, budget - n1))
  halve = n1 + n2 > budget
  n1, n2 = tf.where(halve, budget // 2, n1), tf.where(halve, budget // 2 + budget % 2, n2)
  fits = length_a + length_b <= budget
  keep_a = tf.where(fits, length_a, tf.minimum(length_a, tf.where(swap, n2, n1)))
  keep_b = tf.where(fits, length_b, tf.minimum(length_b, tf.where(swap, n1, n2)))
  return keep_a, keep_b


def bert_label(label: tf.Tensor, kind: str) -> tf.Tensor:
  """Canonical label -> BERT class id: -1 -> -100 (ignored); STS-B scores -> 26 bins of 0.2 (0..25)."""
  if kind == "stsb":
    return tf.where(label < 0, IGNORE_LABEL, tf.cast(tf.round(label * 5), tf.int32))
  return tf.where(label < 0, IGNORE_LABEL, tf.cast(label, tf.int32))


def bert_preprocessor(text_format: TextFormat, vocabulary: vocabularies.WordPieceVocabulary,
                      default_length: int = 512) -> Callable[..., tf.data.Dataset]:
  """Canonical examples -> input_ids [l], token_type_ids [l], attention_mask [l], labels [] (+ idx features).

  `[CLS] a [SEP] b [SEP]` (token types 0 up to and including the first [SEP], then 1), truncated to
  `sequence_length['input_ids']` (else `default_length`) like HF's tokenizer. Unpadded; the feature converter pads.
  """
  segment_a, segment_b = text_format.bert_segments

  def text(ex, names):
    if text_format.kind in ("wsc", "cluewsc"):
      return mark_spans(ex, by_character=text_format.kind == "cluewsc")
    values = [_clean_multirc(ex[n]) if n == "paragraph" else ex[n] for n in names]
    return tf.strings.join(values, separator=" ")

  def preprocess(dataset: tf.data.Dataset, sequence_length: Mapping[str, int] | None = None) -> tf.data.Dataset:
    length = (sequence_length or {}).get("input_ids") or default_length
    cls, sep = tf.constant([vocabulary.cls_id]), tf.constant([vocabulary.sep_id])

    def encode(ex):
      ids_a = vocabulary.encode_tf(text(ex, segment_a))
      if segment_b:
        ids_b = vocabulary.encode_tf(text(ex, segment_b))
        keep_a, keep_b = truncate_pair(tf.size(ids_a), tf.size(ids_b), length - 3)
        ids = tf.concat([cls, ids_a[:keep_a], sep, ids_b[:keep_b], sep], 0)
        types = tf.concat([tf.zeros([keep_a + 2], tf.int32), tf.ones([keep_b + 1], tf.int32)], 0)
      else:
        ids = tf.concat([cls, ids_a[:length - 2], sep], 0)
        types = tf.zeros_like(ids)
      idx = ex["idx"]
      idx = {f"idx/{k}": v for k, v in idx.items()} if isinstance(idx, Mapping) else {"idx": idx}
      return {"input_ids": ids, "token_type_ids": types, "attention_mask": tf.ones_like(ids),
              "labels": bert_label(ex["label"], text_format.kind), **idx}
    return dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE)
  return preprocess


BOOL = ("False", "True")
ENTAILMENT2 = ("entailment", "not_entailment")
PAIR = lambda a, b: ((a,), (b,))  # noqa: E731  (BERT segments of a sentence pair)
SINGLE = lambda a: ((a,), ())  # noqa: E731

# Keyed by registry.DATASETS names. Label strings follow TFDS's label_classes (T5's targets) for GLUE/SuperGLUE;
# CLUE, which has no T5 convention, gets English words (TNEWS: its label_desc without 'news_'; IFLYTEK: the id).
FORMATS: dict[str, TextFormat] = {
    "super_glue_boolq": TextFormat("boolq", label_strings=BOOL, bert_segments=PAIR("question", "passage")),
    "super_glue_cb": TextFormat("cb", label_strings=("entailment", "contradiction", "neutral"),
                                bert_segments=PAIR("premise", "hypothesis")),
    "super_glue_copa": TextFormat("copa", label_strings=("choice1", "choice2"),
                                  bert_segments=(("premise", "question"), ("choice1", "choice2"))),
    "super_glue_multirc": TextFormat("multirc", label_strings=BOOL, feature_names=("question", "answer", "paragraph"),
                                     bert_segments=(("paragraph",), ("question", "answer"))),
    "super_glue_record": TextFormat("record", kind="record"),
    "super_glue_rte": TextFormat("rte", label_strings=ENTAILMENT2, bert_segments=PAIR("premise", "hypothesis")),
    "super_glue_wic": TextFormat("wic", label_strings=BOOL, feature_names=("sentence1", "sentence2", "word"),
                                 bert_segments=(("word",), ("sentence1", "sentence2"))),
    "super_glue_wsc": TextFormat("wsc", kind="wsc", label_strings=BOOL, bert_segments=SINGLE("text")),
    "glue_cola": TextFormat("cola", label_strings=("unacceptable", "acceptable"), bert_segments=SINGLE("sentence")),
    "glue_sst2": TextFormat("sst2", label_strings=("negative", "positive"), bert_segments=SINGLE("sentence")),
    "glue_mrpc": TextFormat("mrpc", label_strings=("not_equivalent", "equivalent"),
                            bert_segments=PAIR("sentence1", "sentence2")),
    "glue_qqp": TextFormat("qqp", label_strings=("not_duplicate", "duplicate"),
                           bert_segments=PAIR("question1", "question2")),
    "glue_stsb": TextFormat("stsb", kind="stsb", label_strings=STSB_LABELS,
                            bert_segments=PAIR("sentence1", "sentence2")),
    "glue_mnli": TextFormat("mnli", label_strings=("entailment", "neutral", "contradiction"),
                            bert_segments=PAIR("premise", "hypothesis")),
    "glue_qnli": TextFormat("qnli", label_strings=ENTAILMENT2, bert_segments=PAIR("question", "sentence")),
    "glue_rte": TextFormat("rte", label_strings=ENTAILMENT2, bert_segments=PAIR("sentence1", "sentence2")),
    "glue_wnli": TextFormat("wnli", label_strings=("not_entailment", "entailment"),
                            bert_segments=PAIR("sentence1", "sentence2")),
    "clue_afqmc": TextFormat("afqmc", label_strings=("not_equivalent", "equivalent"),
                             bert_segments=PAIR("sentence1", "sentence2")),
    "clue_tnews": TextFormat("tnews", label_strings=("story", "culture", "entertainment", "sports", "finance", "house",
                                                     "car", "edu", "tech", "military", "travel", "world", "stock",
                                                     "agriculture", "game"), bert_segments=SINGLE("sentence")),
    "clue_iflytek": TextFormat("iflytek", label_strings=tuple(str(i) for i in range(119)),
                               bert_segments=SINGLE("sentence")),
    "clue_cmnli": TextFormat("cmnli", label_strings=("entailment", "neutral", "contradiction"),
                             bert_segments=PAIR("sentence1", "sentence2")),
    "clue_ocnli": TextFormat("ocnli", label_strings=("entailment", "neutral", "contradiction"),
                             bert_segments=PAIR("sentence1", "sentence2")),
    "clue_csl": TextFormat("csl", label_strings=BOOL, bert_segments=PAIR("keyword", "abst")),
    "clue_cluewsc2020": TextFormat("cluewsc2020", kind="cluewsc", label_strings=BOOL, bert_segments=SINGLE("text")),
}
