"""Collapse diagnostics of a sequence classifier: how spread out the features its head reads are.

A prompt (or prefix) that grows until it dominates attention makes every example's pooled vector nearly the
same (docs/RESULTS.md): the head then sees one point and predicts one class, whatever its budget. The mean
pairwise cosine of the features over an evaluation set shows it (near 1 = collapsed), next to the accuracy.
"""
from typing import Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh

from prompt_tuning_jax.train import partitioning

MAX_EXAMPLES = 1024
"""At most this many examples' features per evaluation (the first batches of the split's batches)."""


def feature_spread(features: np.ndarray) -> dict[str, float]:
  """features [n, d] (n >= 2) -> {'feature_cosine': mean cosine over the n(n-1) ordered pairs i != j,
  'feature_norm': mean row norm}. Uses |sum of unit rows|^2 = n + sum_{i != j} cos_ij (no [n, n] matrix)."""
  features = np.asarray(features, np.float64)
  n = features.shape[0]
  if n < 2:
    raise ValueError(f"feature_spread needs at least 2 rows, got features of shape {features.shape}")
  norms = np.linalg.norm(features, axis=-1)
  unit = features / np.maximum(norms, 1e-12)[:, None]
  total = np.square(unit.sum(0)).sum()
  return {"feature_cosine": float((total - n) / (n * (n - 1))), "feature_norm": float(norms.mean())}


def has_features(model: nn.Module) -> bool:
  """Whether the model exposes the features its classifier reads (BertForSequenceClassification.features)."""
  return callable(getattr(model, "features", None))


def evaluation_features(model: nn.Module, params: dict, batches: Sequence[dict], num_examples: int,
                        max_examples: Optional[int] = MAX_EXAMPLES, mesh: Optional[Mesh] = None) -> np.ndarray:
  """The first min(num_examples, max_examples) real rows' features [n, d] of evaluation batches (batch rows
  past `num_examples` are padding copies and are left out); on `mesh`, each batch's rows split over its data
  axis (partitioning.run_sharded)."""
  limit = num_examples if max_examples is None else min(num_examples, max_examples)
  apply = jax.jit(lambda p, b: model.apply({"params": p}, b["input_ids"], b.get("attention_mask"),
                                           b.get("token_type_ids"), method="features"))
  rows, seen = [], 0
  for batch in batches:
    if seen >= limit:
      break
    rows.append(partitioning.run_sharded(lambda b: apply(params, b), batch, mesh))
    seen += rows[-1].shape[0]
  return np.concatenate(rows)[:limit]
