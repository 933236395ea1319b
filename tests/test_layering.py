"""Dependencies point one way (README, "Architecture"): an import scan of the package and tasks/.

Every `import` / `from ... import` in prompt_tuning_jax/ and tasks/ (function-level ones included) is checked
against the layer order the README states. A module may import its own layer's package and any lower layer; the
two packages of one layer (train/, evaluation/) do not import each other; tasks/ knows no model.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Leaf utilities any layer may use; they import no project module outside this set.
UTILITIES = frozenset({
    "prompt_tuning_jax.checkpoints.tree", "prompt_tuning_jax.train.outputs", "prompt_tuning_jax.train.partitioning",
    "prompt_tuning_jax.evaluation.metrics", "prompt_tuning_jax.evaluation.postprocessors",
    "prompt_tuning_jax.gin_utils", "prompt_tuning_jax.minilm",
})
# The layers, lowest first: a package (or module) name -> its rank. Same rank, different package: no imports.
LAYERS = {
    "prompt_tuning_jax.models": 1,
    "prompt_tuning_jax.peft": 2,
    "prompt_tuning_jax.checkpoints": 3,
    "tasks": 3,
    "prompt_tuning_jax.train": 4,
    "prompt_tuning_jax.evaluation": 4,
    "prompt_tuning_jax.runs": 5,
    "prompt_tuning_jax.cli": 5,  # the entry points' shared main
    # entry points
    "prompt_tuning_jax.params": 6, "prompt_tuning_jax.eval": 6,
    "prompt_tuning_jax.infer": 6, "prompt_tuning_jax.train.__main__": 6, "prompt_tuning_jax.demo": 6,
    "prompt_tuning_jax.launch": 6, "prompt_tuning_jax.bench": 6,
    # scripts/' library (what the scripts, notebooks and tests import), above the entry points: each run's
    # result.json counts its parameters with params.parameter_report
    "prompt_tuning_jax.experiments": 7,
}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _owner(module: str) -> str:
  """The most specific LAYERS key that `module` falls under."""
  keys = [k for k in LAYERS if module == k or module.startswith(k + ".")]
  if not keys:
    raise KeyError(f"{module} is in no layer of tests/test_layering.py: add it to LAYERS (and to the README)")
  return max(keys, key=len)


def _project_imports(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, imported module) for each project import in `path`; `from pkg import mod` counts as pkg.mod."""
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{alias.name}" for alias in node.names]
    else:
      continue
    found += [(node.lineno, name) for name in names if name.split(".")[0] in ("prompt_tuning_jax", "tasks")]
  return found


def _resolve(name: str) -> str:
  """`pkg.mod.Symbol` -> the longest prefix that is a module or package in the tree."""
  parts = name.split(".")
  for end in range(len(parts), 0, -1):
    base = ROOT.joinpath(*parts[:end])
    if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
      return ".".join(parts[:end])
  raise KeyError(name)


def _violations(module: str, imported: str) -> str:
  if imported == module or imported in UTILITIES:
    return ""
  if module in UTILITIES:
    return "a shared utility imports a project module outside the utilities"
  mine, theirs = _owner(module), _owner(imported)
  if mine == "tasks" and theirs != "tasks":
    return "tasks/ knows no model: it imports only tasks/ and the shared utilities"
  if mine == theirs or (module.startswith(theirs + ".") and LAYERS[theirs] <= LAYERS[mine]):
    return ""
  if LAYERS[theirs] > LAYERS[mine]:
    return f"layer {LAYERS[mine]} ({mine}) imports layer {LAYERS[theirs]} ({theirs})"
  if LAYERS[theirs] == LAYERS[mine]:
    return f"{mine} and {theirs} share layer {LAYERS[mine]} and may not import each other"
  return ""


def _files():
  return sorted(p for d in ("prompt_tuning_jax", "tasks") for p in (ROOT / d).rglob("*.py"))


def test_every_module_is_in_a_layer():
  for path in _files():
    module = _module_name(path)
    if module not in UTILITIES and module != "prompt_tuning_jax":
      _owner(module)


def test_dependencies_point_one_way():
  problems = []
  for path in _files():
    module = _module_name(path)
    if module == "prompt_tuning_jax":
      continue
    for line, name in _project_imports(path):
      why = _violations(module, _resolve(name))
      if why:
        problems.append(f"{path.relative_to(ROOT)}:{line} imports {name}: {why}")
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module, imported, bad", [
    ("prompt_tuning_jax.evaluation.rank_classification", "prompt_tuning_jax.train.train_step", True),
    ("prompt_tuning_jax.models.bert", "prompt_tuning_jax.peft.prompts", True),
    ("tasks.registry", "prompt_tuning_jax.models.bert", True),
    ("prompt_tuning_jax.train.partitioning", "prompt_tuning_jax.models.layers", True),
    ("prompt_tuning_jax.runs", "prompt_tuning_jax.params", True),
    ("prompt_tuning_jax.peft.gpc", "prompt_tuning_jax.peft.prompts", False),
    ("prompt_tuning_jax.train.trainer", "prompt_tuning_jax.checkpoints.peft_io", False),
    ("prompt_tuning_jax.evaluation.evaluator", "prompt_tuning_jax.train.partitioning", False),
    ("tasks.registry", "prompt_tuning_jax.evaluation.metrics", False),
    ("prompt_tuning_jax.train.__main__", "prompt_tuning_jax.runs", False),
    ("prompt_tuning_jax.experiments.training", "prompt_tuning_jax.params", False),
    ("prompt_tuning_jax.params", "prompt_tuning_jax.experiments.config", True),
    ("prompt_tuning_jax.bench.runner", "prompt_tuning_jax.experiments.step_flops", True),
])
def test_the_rule_itself(module, imported, bad):
  assert bool(_violations(module, imported)) == bad
