"""Dataset-level evaluation: a seqio task's split -> predictions -> the task's metrics (and files).

  metrics = evaluate(model, params, task_name='glue_rte_taskless', split='validation',
                     feature_lengths={'inputs': 256, 'targets': 8}, batch_size=32, output_dir='/tmp/eval')
  train(..., evaluate=make_evaluate_fn(task_name=..., split='validation', ...))   # data read once, cached

Scoring: 'rank' (T5: score every label string, rank_classification.py), 'generate' (T5: greedy, or beam search
when num_beams > 1; the text goes through the task's postprocess_fn), 'classifier' (BERT sequence heads),
'token_classifier' (BERT token heads, NER: the argmax tag of every real token; the task's postprocess_fn keeps the
first WordPiece of each word, i.e. the positions labelled in the data, and span_f1 scores the word tags). 'auto':
rank for T5 classification tasks, generate for generative ones (ReCoRD, STS-B), classifier / token_classifier for
BERT. The last
partial batch is padded with copies of its last row (dropped again), so nothing recompiles. `output_dir` receives
predictions.jsonl (one line per example) and metrics.json, each written atomically (tmp file + os.replace).

Given the `mesh` the params live on, each batch's rows are split over its 'data' axis: on a multi-process job
every process reads the split but feeds and scores only its rows of each batch (partitioning.run_sharded), the
scores / predictions are all-gathered, and every process computes the same metrics; process 0 writes the files.
"""
import dataclasses
import json
import logging
import os
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh
import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning_jax.evaluation import diagnostics, ensemble, rank_classification
from prompt_tuning_jax.models import bert, decoding, t5
from prompt_tuning_jax.models import inputs as inputs_lib
from prompt_tuning_jax.train import outputs, partitioning
from tasks import buckets as buckets_lib
from tasks import formats, registry

log = logging.getLogger(__name__)
GENERATIVE_KINDS = ("stsb", "record")  # T5 tasks decoded as text even when they have label strings
FAMILY_MODELS = {registry.T5: t5.T5, registry.T5_TASKLESS: t5.T5, registry.BERT: bert.BertForSequenceClassification,
                 registry.BERT_TOKENS: bert.BertForTokenClassification}


@dataclasses.dataclass(frozen=True)
class EvalData:
  """One split of one task, read once.

  Attributes:
    task: the seqio task. batches: model inputs, each [batch_size, ...] int32 (the last one padded), in
      length order and cut to length buckets (tasks/buckets.py), or in the split's order at the full length.
    order: [n] the example of each batch row (row j of the concatenated batches is example order[j]).
    examples: the n real examples' task features (numpy). targets: n postprocessed targets. inputs: n texts.
    labels: label strings or None. vocabulary: the targets vocabulary (T5) or None. label_tokens: [C, t] or None.
  """
  task: seqio.Task
  batches: list[dict[str, np.ndarray]]
  order: np.ndarray
  examples: list[dict[str, Any]]
  targets: list[Any]
  inputs: list[str]
  labels: Optional[list[str]]
  vocabulary: Optional[seqio.Vocabulary]
  label_tokens: Optional[np.ndarray]

  def in_split_order(self, values: Sequence[Any]) -> list[Any]:
    """One value per batch row (pad rows included) -> the n examples' values in the split's order."""
    return [values[row] for row in np.argsort(self.order)]

  def predictions(self, outputs: list[Any]) -> list[Any]:
    """Raw outputs (label strings, class ids or texts), one per example -> postprocessed predictions."""
    return [self.task.postprocess_fn(o, example=ex, is_target=False) for o, ex in zip(outputs, self.examples)]


def load_eval_data(task_name: str, split: str, feature_lengths: dict[str, int], batch_size: int,
                   data_dir: Optional[str] = None, max_examples: Optional[int] = None,
                   buckets: Optional[buckets_lib.LengthBuckets] = buckets_lib.LengthBuckets()) -> EvalData:
  """Reads (the first `max_examples` of) a split into numpy batches of `batch_size` rows (the last one padded),
  sorted by length and cut to `buckets` (None: the split's order, padded to `feature_lengths`)."""
  info, task = registry.task_info(task_name), seqio.get_mixture_or_task(task_name)
  model_ds = registry.model_dataset(task_name, split, feature_lengths, data_dir=data_dir)
  is_t5 = info.family in (registry.T5, registry.T5_TASKLESS)
  ds = tf.data.Dataset.zip((model_ds, registry.task_dataset(task_name, split, feature_lengths, data_dir=data_dir))
                           ) if is_t5 else model_ds.map(lambda ex: (ex, ex))  # BERT features keep every field
  pairs = list((ds if max_examples is None else ds.take(max_examples)).as_numpy_iterator())
  if not pairs:
    raise ValueError(f"{task_name} split {split!r} gave no examples (max_examples={max_examples})")
  rows, examples = [inputs_lib.model_inputs(f) for f, _ in pairs], [ex for _, ex in pairs]
  batches, order = buckets_lib.sorted_batches(rows, batch_size, buckets)
  batches = [{k: v.astype(np.int32) for k, v in batch.items()} for batch in batches]
  inputs = [ex["inputs_pretokenized"].decode() if is_t5 else task.output_features["input_ids"].vocabulary.decode(
      [int(i) for i in ex["input_ids"]]) for ex in examples]
  targets = [task.postprocess_fn(ex.get("targets_pretokenized", ex.get("labels")), example=ex, is_target=True)
             for ex in examples]
  labels, vocabulary = registry.label_strings(task_name), task.output_features["targets"].vocabulary if is_t5 else None
  label_tokens = rank_classification.label_token_matrix(vocabulary, labels) if is_t5 and labels else None
  return EvalData(task, batches, order, examples, targets, inputs, labels, vocabulary, label_tokens)


def resolve_scoring(model: nn.Module, task_name: str, scoring: str) -> str:
  """'auto' -> 'rank' / 'generate' / 'classifier' / 'token_classifier' (module docstring); checks the model fits
  the task."""
  info = registry.task_info(task_name)
  is_t5 = isinstance(model, t5.T5)
  if not isinstance(model, FAMILY_MODELS[info.family]):
    raise ValueError(f"{task_name} is a {info.family} task, but the model is a {type(model).__name__}; evaluation "
                     "takes T5 with T5 tasks, BertForSequenceClassification with bert_ tasks, "
                     "BertForTokenClassification with NER (bert_tokens) tasks")
  allowed = ("rank", "generate") if is_t5 else ("token_classifier",) if info.family == registry.BERT_TOKENS else (
      "classifier",)
  if scoring == "auto":
    generative = is_t5 and (info.label_strings is None or formats.FORMATS[info.dataset].kind in GENERATIVE_KINDS)
    return allowed[0] if not is_t5 else "generate" if generative else "rank"
  if scoring not in allowed or (scoring == "rank" and info.label_strings is None):
    raise ValueError(f"scoring={scoring!r} does not apply to {task_name} (label strings: {info.label_strings}) "
                     f"with a {type(model).__name__}; choose from {('auto',) + allowed}")
  return scoring


def write_results(output_dir: str, records: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
  """predictions.jsonl (one record per line) and metrics.json in output_dir (outputs.write_text: atomic, host 0)."""
  def jsonable(value: Any) -> Any:
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else str(value)
  os.makedirs(output_dir, exist_ok=True)
  for name, text in (("predictions.jsonl", "".join(json.dumps(r, default=jsonable) + "\n" for r in records)),
                     ("metrics.json", json.dumps(metrics, indent=2, default=jsonable))):
    outputs.write_text(os.path.join(output_dir, name), text)


def _class_outputs(how: str, labels: Optional[list[str]], ids: np.ndarray) -> list[Any]:
  """What postprocess_fn reads: label strings (rank) or class ids [n] (classifier)."""
  return [labels[i] for i in ids] if how == "rank" else [int(i) for i in ids]


def make_evaluate_fn(*, task_name: str, split: str, feature_lengths: dict[str, int], batch_size: int,
                     data_dir: Optional[str] = None, scoring: str = "auto", num_beams: int = 1,
                     max_decode_length: Optional[int] = None, max_examples: Optional[int] = None,
                     output_dir: Optional[str] = None, prompt_index: Optional[int] = None,
                     length_normalize: bool = False,
                     buckets: Optional[buckets_lib.LengthBuckets] = buckets_lib.LengthBuckets()
                     ) -> Callable[[nn.Module, dict], dict[str, Any]]:
  """Reads the split once (numpy) and returns `(model, params, mesh=None) -> metrics`, as `evaluate` computes
  them."""
  data = load_eval_data(task_name, split, feature_lengths, batch_size, data_dir, max_examples, buckets)
  decode_length = max_decode_length or feature_lengths.get("targets")

  def predict(model: nn.Module, params: dict, batch: dict, how: str, mesh: Optional[Mesh]
              ) -> tuple[list[Any], Optional[np.ndarray]]:
    """One batch -> (raw outputs: label strings, class ids or decoded texts; scores [b, C] / [b] / None)."""
    inputs = inputs_lib.model_inputs(batch)
    if prompt_index is not None:  # [b]: one prompt of a bank for every row
      inputs["prompt_index"] = np.full((len(next(iter(inputs.values()))),), prompt_index, np.int32)
    if how != "generate":
      scores = partitioning.run_sharded(lambda b: rank_classification.score_batch(
          model, params, b, data.label_tokens, b.get("prompt_index"), length_normalize),
          inputs, mesh)  # [b, C], or [b, l, C] per token
      if how == "token_classifier":
        if scores.shape[-1] != len(data.labels):
          raise ValueError(f"{task_name} has {len(data.labels)} tags, but the model's classifier has "
                           f"{scores.shape[-1]} outputs (set NUM_LABELS = {len(data.labels)})")
        lengths = np.asarray(batch["attention_mask"]).sum(-1)  # [b] real tokens
        return [row[:n] for row, n in zip(scores.argmax(-1), lengths)], None  # per-token scores: too big to write
      return _class_outputs(how, data.labels, scores.argmax(-1)), scores
    def generate(b: dict) -> tuple[Any, Any]:
      kwargs = dict(max_decode_length=decode_length, eos_id=data.vocabulary.eos_id, prompt_index=b.get("prompt_index"))
      if num_beams == 1:
        return decoding.greedy_decode(model, params, b["encoder_input_tokens"], **kwargs), None
      beams, beam_scores = decoding.beam_search(model, params, b["encoder_input_tokens"], num_beams=num_beams, **kwargs)
      return beams[:, 0], beam_scores[:, 0]  # the best beam
    generated, scores = partitioning.run_sharded(generate, inputs, mesh)
    return [data.vocabulary.decode(row.tolist()) for row in generated], scores

  def evaluate_fn(model: nn.Module, params: dict, mesh: Optional[Mesh] = None) -> dict[str, Any]:
    """-> the metrics of `params` (on `mesh`, or one device when None) over the split."""
    how, n = resolve_scoring(model, task_name, scoring), len(data.examples)
    if mesh is not None and jax.process_count() > 1:
      rows = partitioning.host_rows(mesh, batch_size)
      log.info("process %d of %d scores rows [%d, %d) of each evaluation batch of %d (%d batches)",
               jax.process_index(), jax.process_count(), rows.start, rows.stop, batch_size, len(data.batches))
    if how == "generate" and not decode_length:
      raise ValueError(f"generate on {task_name} needs max_decode_length or feature_lengths['targets']")
    outputs, scores = [], []
    for batch in data.batches:
      batch_outputs, batch_scores = predict(model, params, batch, how, mesh)
      outputs += batch_outputs
      scores += [None] * len(batch_outputs) if batch_scores is None else list(batch_scores)
    outputs, scores = data.in_split_order(outputs), data.in_split_order(scores)  # pad rows dropped
    predictions = data.predictions(outputs)
    metrics = {**ensemble.compute_metrics(registry.task_metrics(task_name), data.targets, predictions),
               "scoring": how, "num_examples": n}
    if how == "classifier" and diagnostics.has_features(model) and n > 1:  # collapse check (diagnostics.py)
      metrics.update(diagnostics.feature_spread(diagnostics.evaluation_features(model, params, data.batches, n,
                                                                                mesh=mesh)))
    if output_dir:
      write_results(output_dir, [{"input": i, "target": t, "output": o, "prediction": p, "score": s} for i, t, o, p, s
                                 in zip(data.inputs, data.targets, outputs, predictions, scores)], metrics)
    return metrics
  return evaluate_fn


def evaluate(model: nn.Module, params: dict, *, task_name: str, split: str, feature_lengths: dict[str, int],
             batch_size: int, data_dir: Optional[str] = None, scoring: str = "auto", num_beams: int = 1,
             max_decode_length: Optional[int] = None, max_examples: Optional[int] = None,
             output_dir: Optional[str] = None, prompt_index: Optional[int] = None,
             length_normalize: bool = False,
             buckets: Optional[buckets_lib.LengthBuckets] = buckets_lib.LengthBuckets(),
             mesh: Optional[Mesh] = None) -> dict[str, Any]:
  """-> {metric: value, ..., 'scoring', 'num_examples'}. `prompt_index`: one prompt of a bank for every example;
  `length_normalize`: rank scores / label token count; `max_decode_length` defaults to feature_lengths['targets'];
  `buckets`: length buckets for the batches (None: fixed padding; the predictions are the same); `mesh`: the
  mesh `params` live on (module docstring; None: one device)."""
  kwargs = {k: v for k, v in locals().items() if k not in ("model", "params", "mesh")}
  return make_evaluate_fn(**kwargs)(model, params, mesh)


def evaluate_ensemble_dataset(model: nn.Module, bank_params: dict, num_prompts: int, *, task_name: str, split: str,
                              feature_lengths: dict[str, int], batch_size: int, data_dir: Optional[str] = None,
                              scoring: str = "auto", max_examples: Optional[int] = None,
                              output_dir: Optional[str] = None, length_normalize: bool = False,
                              buckets: Optional[buckets_lib.LengthBuckets] = buckets_lib.LengthBuckets(),
                              mesh: Optional[Mesh] = None) -> dict[str, Any]:
  """A K-prompt bank over a split -> `ensemble.evaluate_ensemble`'s report + scoring, num_examples, num_prompts.

  Each batch runs as one [K*batch_size] forward; 'rank' and 'classifier' only. predictions.jsonl lines hold
  each prompt's prediction, both ensembles' and the scores [K, C]."""
  how = resolve_scoring(model, task_name, scoring)
  if how in ("generate", "token_classifier"):
    raise ValueError(f"ensembles combine one class score vector per example, but {task_name} resolves to "
                     f"scoring={how!r}")
  data = load_eval_data(task_name, split, feature_lengths, batch_size, data_dir, max_examples, buckets)
  n, scores = len(data.examples), np.concatenate([partitioning.run_sharded(lambda b: ensemble.ensemble_scores(
      model, bank_params, b, num_prompts, data.label_tokens, length_normalize), batch, mesh)
      for batch in data.batches], axis=1)  # each [K, b, C], the batch rows split over the mesh's data axis
  scores = scores[:, np.argsort(data.order)]  # [K, n_padded, C] -> [K, n, C] in the split's order

  def to_predictions(ids: np.ndarray) -> list[Any]:
    return data.predictions(_class_outputs(how, data.labels, ids))
  report = {**ensemble.evaluate_ensemble(scores, data.targets, registry.task_metrics(task_name), to_predictions),
            "scoring": how, "num_examples": n, "num_prompts": num_prompts}
  if output_dir:
    per_prompt = [to_predictions(s.argmax(-1)) for s in scores]  # K lists of n
    combined = {name: to_predictions(combine(scores)) for name, combine in ensemble.COMBINERS.items()}
    write_results(output_dir, [
        {"input": data.inputs[i], "target": data.targets[i], "predictions": [p[i] for p in per_prompt],
         **{name: combined[name][i] for name in combined}, "scores": scores[:, i]} for i in range(n)], report)
  return report
