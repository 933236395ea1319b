"""Flat views of nested parameter trees: {'encoder/layers_0/attention/query/kernel': array}."""
from typing import Any

from flax import traverse_util


def flatten_params(tree: dict) -> dict[str, Any]:
  """Nested dict -> {'a/b/c': leaf}."""
  return traverse_util.flatten_dict(dict(tree), sep="/")


def unflatten_params(flat: dict[str, Any]) -> dict:
  """{'a/b/c': leaf} -> nested dict."""
  return traverse_util.unflatten_dict(flat, sep="/")
