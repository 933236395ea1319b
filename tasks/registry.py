"""seqio Task registration and the dataset API the trainer uses.

Task names (`import tasks` registers all of them; `task_names()` lists them):
  <dataset>             T5 text-to-text, e.g. glue_sst2 ('sst2 sentence: ...' -> 'positive'), super_glue_rte
  <dataset>_taskless    the same without the leading task word (prompt tuning's format), e.g. glue_sst2_taskless
  bert_<dataset>        BERT sequence classification, e.g. bert_glue_sst2, bert_clue_afqmc
  bert_conll2003_ner, bert_cluener    BERT token classification (NER)
  <dataset> is glue_{cola,sst2,mrpc,qqp,stsb,mnli,qnli,rte,wnli}, super_glue_{boolq,cb,copa,multirc,record,rte,wic,
  wsc}, clue_{afqmc,tnews,iflytek,cmnli,ocnli,csl,cluewsc2020}. ReCoRD has no BERT variant (not classification).

Features. T5 tasks: 'inputs', 'targets' (+ '*_pretokenized', idx fields), as t5x's; `model_dataset` turns them
into encoder_input_tokens / decoder_input_tokens / decoder_target_tokens / decoder_loss_weights with
seqio.EncDecFeatureConverter(pack=False); feature lengths {'inputs': n, 'targets': m}. BERT tasks:
input_ids, token_type_ids, attention_mask [l] and labels ([] class id, or [l] tag ids; -100 = no label), lengths
{'input_ids': l}; `model_dataset` pads them to l (labels with -100). BERT STS-B is a 26-way classification over
scores rounded to 0.2 (the T5 targets), so one cross-entropy loss serves every task.

The local-or-TFDS choice is made when a dataset is built (tasks/data_dir.py); `task_dataset` / `model_dataset`
take `data_dir` (the trainer's DATA_DIR) and `skip_malformed` for the duration of the call.
"""
import dataclasses
from typing import Any, Callable, Mapping

import seqio
import tensorflow as tf

from prompt_tuning_jax.evaluation import metrics
from prompt_tuning_jax.evaluation import postprocessors
from tasks import benchmarks
from tasks import data_dir as data_dir_lib
from tasks import formats
from tasks import ner
from tasks import sources
from tasks import vocabularies

T5, T5_TASKLESS, BERT, BERT_TOKENS = "t5", "t5_taskless", "bert", "bert_tokens"
DATASETS: dict[str, sources.Dataset] = {**benchmarks.DATASETS, **ner.DATASETS}

METRICS: dict[str, tuple[Callable[..., dict[str, float]], ...]] = {  # default: accuracy
    "super_glue_cb": (metrics.mean_multiclass_f1(3), metrics.accuracy),
    "super_glue_multirc": (metrics.multirc_f1a, metrics.multirc_exact_match),
    "super_glue_record": (metrics.record_em_f1,),
    "glue_cola": (metrics.matthews_corrcoef,),
    "glue_mrpc": (metrics.f1_with_invalid, metrics.accuracy),
    "glue_qqp": (metrics.f1_with_invalid, metrics.accuracy),
    "glue_stsb": (metrics.pearson_corrcoef, metrics.spearman_corrcoef),
    "conll2003_ner": (metrics.span_f1,),  # on word tags: postprocessors.word_tags
    "cluener": (metrics.span_f1,),
}


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """What the trainer needs beyond the seqio Task.

  Attributes:
    dataset: the benchmarks/ner dataset name, e.g. 'glue_rte'.
    family: 't5', 't5_taskless', 'bert' or 'bert_tokens'.
    label_strings: targets (T5) or class / tag names (BERT) in id order; None for ReCoRD.
    metric_fns: `(targets, predictions) -> dict` on postprocessed values.
  """
  dataset: str
  family: str
  label_strings: tuple[str, ...] | None
  metric_fns: tuple[Callable[..., dict[str, float]], ...]


_INFO: dict[str, TaskInfo] = {}


def default_name(dataset: str, family: str) -> str:
  return {T5: dataset, T5_TASKLESS: f"{dataset}_taskless"}.get(family, f"bert_{dataset}")


def _t5_postprocessor(text_format: formats.TextFormat) -> Callable[..., Any]:
  if text_format.kind == "stsb":
    return postprocessors.string_to_float
  if text_format.kind == "record":
    return postprocessors.record
  if text_format.benchmark_name == "multirc":
    return postprocessors.multirc
  return postprocessors.string_label_to_class_id(text_format.label_strings)


def _bert_postprocessor(text_format: formats.TextFormat) -> Callable[..., Any]:
  if text_format.kind == "stsb":
    return postprocessors.bert_class("stsb")
  return postprocessors.bert_class("multirc" if text_format.benchmark_name == "multirc" else "class")


def register_task(dataset: str, family: str, name: str | None = None, vocabulary: seqio.Vocabulary | None = None,
                  data_dir: str | None = None, skip_malformed: bool | None = None) -> seqio.Task:
  """Registers one task (names in the module docstring) and returns it.

  Args:
    dataset: a key of DATASETS.
    family: T5, T5_TASKLESS, BERT or BERT_TOKENS.
    name: the task name; default `default_name(dataset, family)`.
    vocabulary: default `vocabularies.t5_vocabulary()` / `vocabularies.bert_vocabulary()`.
    data_dir: this task's own data dir (wins over every other setting; tasks/data_dir.py).
    skip_malformed: this task's own malformed-line policy (None: the process-wide / scoped setting).
  """
  name = name or default_name(dataset, family)
  spec = DATASETS[dataset]
  source = sources.LocalOrTfdsSource(name, spec, data_dir=data_dir, skip_malformed=skip_malformed)
  if family == BERT_TOKENS:
    vocabulary = vocabulary or vocabularies.bert_vocabulary()
    label_strings = ner.TAGS[dataset]
    preprocessors = [ner.token_classification_preprocessor(vocabulary)]
    output_features = _bert_features(vocabulary, len(label_strings), labels_rank=1)
    postprocess_fn = postprocessors.bert_word_tags(label_strings)  # tag ids per token -> word tags
  elif family == BERT:
    text_format = formats.FORMATS[dataset]
    vocabulary = vocabulary or vocabularies.bert_vocabulary()
    label_strings = text_format.label_strings
    preprocessors = [formats.bert_preprocessor(text_format, vocabulary)]
    output_features = _bert_features(vocabulary, len(label_strings), labels_rank=0)
    postprocess_fn = _bert_postprocessor(text_format)
  elif family in (T5, T5_TASKLESS):
    text_format = formats.FORMATS[dataset]
    vocabulary = vocabulary or vocabularies.t5_vocabulary()
    label_strings = text_format.label_strings
    preprocessors = [formats.t5_preprocessor(text_format, spec.features)]
    preprocessors += [formats.remove_first_word] if family == T5_TASKLESS else []
    preprocessors += [seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                      seqio.preprocessors.append_eos_after_trim]
    output_features = {"inputs": seqio.Feature(vocabulary, add_eos=True, required=False),
                       "targets": seqio.Feature(vocabulary, add_eos=True)}
    postprocess_fn = _t5_postprocessor(text_format)
  else:
    raise ValueError(f"unknown task family {family!r} for {name}; known: {T5}, {T5_TASKLESS}, {BERT}, {BERT_TOKENS}")
  metric_fns = METRICS.get(dataset, (metrics.accuracy,))
  task = seqio.TaskRegistry.add(name, source=source, preprocessors=preprocessors, output_features=output_features,
                                postprocess_fn=postprocess_fn, metric_fns=list(metric_fns))
  _INFO[name] = TaskInfo(dataset, family, label_strings, metric_fns)
  return task


def _bert_features(vocabulary: seqio.Vocabulary, num_labels: int, labels_rank: int) -> dict[str, seqio.Feature]:
  binary = seqio.PassThroughVocabulary(2)
  return {"input_ids": seqio.Feature(vocabulary, add_eos=False),
          "token_type_ids": seqio.Feature(binary, add_eos=False),
          "attention_mask": seqio.Feature(binary, add_eos=False),
          "labels": seqio.Feature(seqio.PassThroughVocabulary(num_labels), add_eos=False, rank=labels_rank)}


def remove_task(name: str) -> None:
  """Unregisters a task (tests registering their own variants clean up with this)."""
  seqio.TaskRegistry.remove(name)
  _INFO.pop(name, None)


def register_all() -> None:
  """Registers every task of the module docstring (idempotent)."""
  for dataset in DATASETS:
    families = [BERT_TOKENS] if dataset in ner.DATASETS else [T5, T5_TASKLESS] + (
        [BERT] if formats.FORMATS[dataset].bert_segments else [])
    for family in families:
      if default_name(dataset, family) not in _INFO:
        register_task(dataset, family)


def task_names() -> list[str]:
  return sorted(_INFO)


def task_info(task_name: str) -> TaskInfo:
  if task_name not in _INFO:
    raise KeyError(f"unknown task {task_name!r}; registered: {', '.join(task_names())}")
  return _INFO[task_name]


def label_strings(task_name: str) -> list[str] | None:
  """Label strings in id order (class-label prompt init, rank classification); None when generative."""
  labels = task_info(task_name).label_strings
  return list(labels) if labels is not None else None


def task_metrics(task_name: str) -> list[Callable[..., dict[str, float]]]:
  return list(task_info(task_name).metric_fns)


def task_dataset(task_name: str, split: str, feature_lengths: Mapping[str, int] | None = None, *,
                 data_dir: str | None = None, skip_malformed: bool | None = None, **get_dataset_kwargs
                 ) -> tf.data.Dataset:
  """The seqio task/mixture dataset (task features, unpadded; shuffle=False unless given)."""
  get_dataset_kwargs.setdefault("shuffle", False)
  with data_dir_lib.using_data_dir(data_dir, skip_malformed):
    return seqio.get_mixture_or_task(task_name).get_dataset(sequence_length=feature_lengths, split=split,
                                                             **get_dataset_kwargs)


def model_dataset(task_name: str, split: str, feature_lengths: Mapping[str, int], batch_size: int | None = None, *,
                  drop_remainder: bool = False, data_dir: str | None = None, skip_malformed: bool | None = None,
                  **get_dataset_kwargs) -> tf.data.Dataset:
  """Model-ready (padded, optionally batched) examples (module docstring); `.as_numpy_iterator()` for numpy."""
  provider = seqio.get_mixture_or_task(task_name)
  names = [t.name for t in provider.tasks] if isinstance(provider, seqio.Mixture) else [task_name]
  family = {task_info(n).family for n in names}
  if len(family) != 1:
    raise ValueError(f"{task_name} mixes task families {sorted(family)}; a batch needs one feature format")
  family = family.pop()
  ds = task_dataset(task_name, split, feature_lengths, data_dir=data_dir, skip_malformed=skip_malformed,
                    **get_dataset_kwargs)
  if family in (T5, T5_TASKLESS):
    ds = seqio.EncDecFeatureConverter(pack=False)(ds, feature_lengths)
  else:
    if "input_ids" not in feature_lengths:
      raise ValueError(f"{task_name}: BERT feature lengths need 'input_ids', got {dict(feature_lengths)}")
    ds = ds.map(lambda ex: pad_bert_features(ex, feature_lengths["input_ids"]), num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch_size, drop_remainder=drop_remainder) if batch_size else ds


def pad_bert_features(example: Mapping[str, tf.Tensor], length: int) -> dict[str, tf.Tensor]:
  """Pads input_ids / token_type_ids / attention_mask with 0 and token labels with -100 to [length]."""
  def pad(x, value):
    x = x[:length]
    return tf.ensure_shape(tf.pad(x, [[0, length - tf.size(x)]], constant_values=value), [length])
  padded = {k: pad(example[k], 0) for k in ("input_ids", "token_type_ids", "attention_mask")}
  labels = example["labels"]
  padded["labels"] = pad(labels, formats.IGNORE_LABEL) if labels.shape.rank == 1 else labels
  return {**example, **padded}

