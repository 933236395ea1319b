"""What trains: one boolean mask over the parameter tree, built from parameter paths.

The mask is the project's single source of truth for trainability (DESIGN.md "Parameters"). It drives
  - the gradient: the train step differentiates only `split(params, mask)[0]` (train/train_step.py);
  - the optimizer: optax only ever sees the trainable partition, so frozen leaves have no state;
  - the checkpoint: only the trainable partition (and optimizer state) needs saving;
  - the parameter report: `count` / `trainable_by_module` (params.py).

A leaf is trainable iff one of `patterns` matches (`re.search`) its '/'-joined path, e.g.
`encoder/layers_3/attention/lora_query/a`. By default that means some path component is a PEFT module
name (`prompt`, `fl_units`, `gpc`, `pasta`, `adapter*`, `lora*`, `prefix*`) or the BERT `classifier` head.
Method gin files that train frozen weights change it:
  trainable.trainable_mask.train_all = True                  (methods/full_finetuning.gin)
  trainable.trainable_mask.patterns = [r'(^|/)bias$', ...]   (methods/bitfit.gin)

Partitions are nested dicts that simply lack the other side's leaves (no placeholders), so
`merge(*split(params, mask))` rebuilds `params` exactly and a subtree with nothing trainable vanishes from
the trainable partition. Every function works on plain, boxed (`nn.LogicallyPartitioned`) or abstract
(`jax.ShapeDtypeStruct`) leaves.
"""
import math
import re
from collections.abc import Mapping
from typing import Any, Callable, Optional, Sequence, Union

from prompt_tuning_jax.checkpoints.tree import flatten_params, unflatten_params

PyTree = Any
Patterns = Union[str, Sequence[str]]

PEFT_MODULE_NAMES = r"prompt|fl_units|gpc|pasta|adapter\w*|lora\w*|prefix\w*|classifier"
"""Module names whose parameters train by default (one path component, matched in full)."""
DEFAULT_TRAINABLE_PATTERNS: tuple[str, ...] = (rf"(^|/)({PEFT_MODULE_NAMES})(/|$)",)
_MODULE_COMPONENT = re.compile(rf"({PEFT_MODULE_NAMES})")


def _flat(tree: Mapping) -> dict[str, Any]:
  """Nested dicts -> {'a/b/c': leaf}; boxed leaves stay whole."""
  if not isinstance(tree, Mapping):
    raise TypeError(f"expected a nested dict of parameters, got {type(tree).__name__}")
  return flatten_params(tree)


def map_paths(fn: Callable[[str], Any], tree: PyTree) -> dict:
  """A tree like `tree` with each leaf replaced by `fn(path)`, path '/'-joined (optax masks and labels)."""
  return unflatten_params({path: fn(path) for path in _flat(tree)})


def trainable_mask(params: PyTree, patterns: Patterns = DEFAULT_TRAINABLE_PATTERNS,
                   train_all: bool = False, extra_patterns: Patterns = ()) -> dict:
  """The trainable mask: a tree of bools with the structure of `params` (boxes count as leaves).

  Args:
    params: the parameter tree (plain, boxed or abstract).
    patterns: regular expressions searched in each leaf's '/'-joined path; a match makes it trainable.
    train_all: everything trains (full fine-tuning); `patterns` is then ignored.
    extra_patterns: more patterns on top of `patterns` (the method's), for a run's own additions, e.g.
      [r'(^|/)pooler/'] trains the BERT pooler with the head whatever the method.
  """
  patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
  patterns += (extra_patterns,) if isinstance(extra_patterns, str) else tuple(extra_patterns)
  compiled = []
  for pattern in patterns:
    try:
      compiled.append(re.compile(pattern))
    except re.error as e:
      raise ValueError(f"trainable_mask: invalid pattern {pattern!r}: {e}") from e
  return map_paths(lambda path: bool(train_all or any(p.search(path) for p in compiled)), params)


def _check_mask(flat_params: Mapping[str, Any], flat_mask: Mapping[str, Any]) -> None:
  if flat_params.keys() != flat_mask.keys():
    missing = sorted(flat_params.keys() - flat_mask.keys())[:3]
    extra = sorted(flat_mask.keys() - flat_params.keys())[:3]
    raise ValueError(f"mask does not match params: params-only paths {missing}, mask-only paths {extra}")


def split(params: PyTree, mask: PyTree) -> tuple[dict, dict]:
  """params -> (trainable, frozen): two nested dicts, each holding only its own leaves.

  `mask` is `trainable_mask(params)` (or any bool tree of the same structure). `merge` inverts it.
  """
  flat, flat_mask = _flat(params), _flat(mask)
  _check_mask(flat, flat_mask)
  trainable = {path: leaf for path, leaf in flat.items() if flat_mask[path]}
  frozen = {path: leaf for path, leaf in flat.items() if not flat_mask[path]}
  return unflatten_params(trainable), unflatten_params(frozen)


def merge(trainable: PyTree, frozen: PyTree) -> dict:
  """(trainable, frozen) -> params, the exact inverse of `split`; a path in both is an error."""
  flat_trainable, flat_frozen = _flat(trainable), _flat(frozen)
  both = sorted(flat_trainable.keys() & flat_frozen.keys())
  if both:
    raise ValueError(f"merge: {len(both)} paths are in both partitions, e.g. {both[:3]}")
  return unflatten_params({**flat_frozen, **flat_trainable})


def _size(leaf: Any) -> int:
  leaf = getattr(leaf, "value", leaf)  # a boxed (nn.LogicallyPartitioned) leaf
  return math.prod(leaf.shape)


def count(params: PyTree, mask: PyTree = None) -> int:
  """Number of scalars in the leaves where `mask` is True (all leaves when `mask` is None)."""
  flat = _flat(params)
  if mask is None:
    return sum(_size(leaf) for leaf in flat.values())
  flat_mask = _flat(mask)
  _check_mask(flat, flat_mask)
  return sum(_size(leaf) for path, leaf in flat.items() if flat_mask[path])


def peft_module(path: str) -> Optional[str]:
  """The first PEFT module component of a leaf's path (`prompt`, `lora_query`, `classifier`, ...), or None."""
  return next((c for c in path.split("/") if _MODULE_COMPONENT.fullmatch(c)), None)


def module_name(path: str) -> str:
  """The group a trainable leaf is counted under: its `peft_module`, else its own name (`bias`, `scale`,
  `kernel`: BitFit, full FT)."""
  return peft_module(path) or path.split("/")[-1]


def trainable_by_module(params: PyTree, mask: PyTree) -> dict[str, int]:
  """Trainable scalars grouped by `module_name`, sorted by name: e.g. {'classifier': 1538, 'pasta': 27648}."""
  flat, flat_mask = _flat(params), _flat(mask)
  _check_mask(flat, flat_mask)
  counts: dict[str, int] = {}
  for path, leaf in flat.items():
    if flat_mask[path]:
      name = module_name(path)
      counts[name] = counts.get(name, 0) + _size(leaf)
  return dict(sorted(counts.items()))
