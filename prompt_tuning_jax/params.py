"""Parameter report: how many parameters a gin-configured model has and how many of them train.

  python -m prompt_tuning_jax.params --gin_file=models/t5_1_1_base.gin --gin_file=methods/prompt_tuning.gin

prints a table and, as its last line, one JSON object (total, trainable, trainable_percent,
trainable_by_module, model, methods, gin_files). Shapes come from `jax.eval_shape(model.init)`, so no
parameter is allocated and even XXL sizes report instantly. The mask is the gin-configured
`peft.trainable.trainable_mask`, the same one that drives training. Percentages are of all parameters
(frozen + trained), the denominator of Lester et al. and He et al. (METHODS.md §F).
"""
import json
import sys
from typing import Any, Sequence

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.models import inputs, slots
from prompt_tuning_jax.peft import trainable


def parameter_report(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
                     check_macros: bool = False) -> dict[str, Any]:
  """Parses the gin files (model, then method) and counts parameters of `%MODEL`, abstractly.

  check_macros: refuse a macro binding that no file defines or uses (gin_utils.parse_gin; the CLI sets it).

  Returns:
    {'total', 'trainable', 'trainable_percent', 'trainable_by_module' (peft.trainable.module_name ->
    count), 'model' (class name), 'methods' (bound slot -> factory), 'gin_files'}.
  """
  gin_utils.parse_gin(gin_files, gin_bindings, check_macros=check_macros)
  model = gin_utils.configured_macro("MODEL", default=None)
  if model is None:
    raise ValueError(f"gin files {list(gin_files)} define no MODEL macro; start with a models/*.gin file")
  shapes = inputs.abstract_params(model)
  mask = gin_utils.configured(trainable.trainable_mask)(shapes)
  total, trained = trainable.count(shapes), trainable.count(shapes, mask)
  methods = slots.factory_names(getattr(model, "slots", None))
  return {"total": total, "trainable": trained, "trainable_percent": 100.0 * trained / total,
          "trainable_by_module": trainable.trainable_by_module(shapes, mask), "model": type(model).__name__,
          "methods": methods, "gin_files": list(gin_files)}


def format_report(report: dict[str, Any]) -> str:
  """A readable table of `parameter_report`'s result."""
  methods = ", ".join(f"{slot}={factory}" for slot, factory in report["methods"].items()) or "none"
  rows = [f"model    {report['model']}   gin: {' '.join(report['gin_files'])}",
          f"slots    {methods}",
          f"{'module':<28}{'trainable':>16}{'% of total':>12}"]
  for name, n in report["trainable_by_module"].items():
    rows.append(f"  {name:<26}{n:>16,}{100.0 * n / report['total']:>11.4f}%")
  rows.append(f"{'trainable':<28}{report['trainable']:>16,}{report['trainable_percent']:>11.4f}%")
  rows.append(f"{'total':<28}{report['total']:>16,}")
  return "\n".join(rows)


def main(argv: Sequence[str]) -> int:
  files, bindings, rest = gin_utils.split_gin_args(argv)
  if rest or not files:
    print(f"usage: python -m prompt_tuning_jax.params --gin_file=<model gin> [--gin_file=<method gin>] "
          f"[--gin.NAME=VALUE ...]; unexpected: {rest or 'no --gin_file'}", file=sys.stderr)
    return 2
  try:
    report = parameter_report(files, bindings, check_macros=True)
  except (FileNotFoundError, ValueError) as e:  # a user error: a wrong file name or binding
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(format_report(report))
  print(json.dumps(report))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
