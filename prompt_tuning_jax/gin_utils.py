"""gin plumbing for the entry points: t5x-style `--gin_file` / `--gin.NAME=value` flags.

Gin files are looked up relative to the working directory and to the installed `gin/` folder
(`prompt_tuning_jax.gin`), so `--gin_file=models/t5_1_1_base.gin` works from anywhere. After `parse_gin`:

  model = configured_macro("MODEL")                       # the model a models/*.gin file builds
  optimizer = configured_macro("OPTIMIZER", default=None)   # a method file's, or None
  mask = configured(trainable.trainable_mask)(params)      # a function with the parsed bindings applied
"""
import difflib
import glob
import importlib.resources
import inspect
import os
import pathlib
import re
from typing import Any, Callable, Sequence

import gin
import gin.config


def gin_dir() -> str:
  """The shipped gin/ folder: installed as package data, or the source tree's top-level gin/."""
  installed = importlib.resources.files("prompt_tuning_jax") / "gin"
  if installed.is_dir():
    return str(installed)
  return str(pathlib.Path(__file__).resolve().parents[1] / "gin")


def gin_search_paths() -> list[str]:
  """The shipped gin/ folder, then the current directory."""
  return [gin_dir(), os.getcwd()]


def split_gin_args(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
  """argv -> (gin files, gin bindings, other args); accepts `--gin_file=F`, `--gin_file F`, `--gin.X=V`."""
  files, bindings, rest = [], [], []
  args = list(argv)
  while args:
    arg = args.pop(0)
    if arg == "--gin_file" and args:
      files.append(args.pop(0))
    elif arg.startswith("--gin_file="):
      files.append(arg.split("=", 1)[1])
    elif arg.startswith("--gin."):
      bindings.append(arg[len("--gin."):])
    else:
      rest.append(arg)
  return files, bindings, rest


def resolve_gin_file(name: str) -> str:
  """A gin file name -> its absolute path (as given, else under gin_search_paths), or a clear error."""
  candidates = [name] + [os.path.join(root, name) for root in gin_search_paths()]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  shipped = sorted(os.path.relpath(p, gin_dir()) for p in glob.glob(os.path.join(gin_dir(), "*", "*.gin")))
  close = difflib.get_close_matches(name, shipped, n=3, cutoff=0.5)
  raise FileNotFoundError(f"gin file {name!r} not found in {gin_search_paths()}; "
                          f"close matches: {close or 'none'}")


_SLOT_BINDING = re.compile(r"^\s*slots\.Slots\.(\w+)\s*=", re.M)
_INCLUDE = re.compile(r"^\s*include\s+['\"]([^'\"]+)['\"]", re.M)


_MACRO_DEFINITION = re.compile(r"^\s*([A-Za-z_]\w*)\s*=", re.M)
_MACRO_REFERENCE = re.compile(r"%([A-Za-z_]\w*)")
_CLI_MACRO_BINDING = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*=")


def gin_texts(path: str, _seen: frozenset = frozenset()) -> list[str]:
  """The text of a gin file and of everything it includes, recursively (each file once)."""
  if path in _seen:
    return []
  with open(path) as f:
    text = f.read()
  texts = [text]
  for included in _INCLUDE.findall(text):
    texts += gin_texts(resolve_gin_file(included), _seen | {path})
  return texts


def bound_slots(path: str) -> set[str]:
  """The `slots.Slots.<slot>` fields a gin file binds, itself or through its includes (read as text)."""
  return {slot for text in gin_texts(path) for slot in _SLOT_BINDING.findall(text)}


def check_macro_bindings(files: Sequence[str], gin_bindings: Sequence[str]) -> None:
  """Refuses a binding `NAME = value` (an upper-case macro) that no file defines or references and no other
  binding references: gin would accept it and nothing would read it (a misspelled TRAIN_STEPS trains the default)."""
  texts = [text for path in files for text in gin_texts(path)]
  known = {name for text in texts for name in _MACRO_DEFINITION.findall(text) if "." not in name}
  known |= {name for text in [*texts, *gin_bindings] for name in _MACRO_REFERENCE.findall(text)}
  for binding in gin_bindings:
    macro = _CLI_MACRO_BINDING.match(binding)
    if macro and macro.group(1) not in known:
      close = difflib.get_close_matches(macro.group(1), sorted(known), n=3, cutoff=0.6)
      raise ValueError(f"gin binding {binding.strip()!r}: no gin file defines or uses the macro {macro.group(1)} "
                       f"(close matches: {close or 'none'}; files: {[os.path.basename(f) for f in files]})")


def check_slot_conflicts(files: Sequence[str]) -> None:
  """Refuses two gin files (each with its includes) that bind the same slot: gin would keep the last binding and
  silently drop a method. Methods combine when they use different slots; a --gin binding may still override."""
  owner: dict[str, str] = {}
  for path in files:
    for slot in sorted(bound_slots(path)):
      if slot in owner:
        raise ValueError(f"gin files {os.path.basename(owner[slot])!r} and {os.path.basename(path)!r} both bind "
                         f"slots.Slots.{slot}: one slot holds one method; combine methods that use different slots")
      owner[slot] = path


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (), finalize: bool = True,
              check_macros: bool = False) -> None:
  """Clears gin, then parses the files (resolved on gin_search_paths) and the bindings.

  Two files that bind the same `slots.Slots` field are refused (check_slot_conflicts). With `check_macros`
  (the command lines: a user's --gin flags), so is a binding of a macro that nothing defines or uses
  (check_macro_bindings); scripts that pass one set of bindings to every method file leave it off."""
  gin.clear_config()
  # NOTE: gin tries its prefixes in order, '' (the working directory) first, and its package-path reader
  # crashes on `include 'runs/x.gin'` when the working directory holds a plain folder named `runs`. The
  # shipped gin/ folder therefore goes first (gin has no public way to order search paths).
  gin.config._LOCATION_PREFIXES[:] = [gin_dir(), ""] + [  # pylint: disable=protected-access
      p for p in gin.config._LOCATION_PREFIXES if p not in ("", gin_dir())]  # pylint: disable=protected-access
  files = [resolve_gin_file(f) for f in gin_files]
  check_slot_conflicts(files)
  if check_macros:
    check_macro_bindings(files, gin_bindings)
  try:
    gin.parse_config_files_and_bindings(files, list(gin_bindings), finalize_config=finalize)
  except ValueError as error:
    hint = close_matches_hint(str(error))
    if not hint:
      raise
    raise ValueError(f"{error}\n  {hint}") from None


_REQUIRED = object()


def configured_macro(name: str, default: Any = _REQUIRED) -> Any:
  """The value of the parsed gin macro `name` (without '%'): a called reference (`@f()`) is called in its scope
  (a fresh model or optimizer per call), a bare one (`@f`) is the configured function, any other value is
  returned as it is.

  An unbound macro gives `default`, or without one a ValueError naming the macro.
  """
  try:
    value = gin.query_parameter(f"%{name}")
  except ValueError:
    if default is not _REQUIRED:
      return default
    raise ValueError(f"no parsed gin file or binding defines the macro {name} (a models/*.gin file defines MODEL, "
                     f"a method file OPTIMIZER)") from None
  if not isinstance(value, gin.config.ConfigurableReference):
    return value
  return value.scoped_configurable_fn() if value.evaluate else value.scoped_configurable_fn


def configured(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn` with the parsed gin bindings applied, or `fn` itself when no gin file configures it."""
  try:
    return gin.get_configurable(fn)
  except ValueError:  # never registered: no parsed file mentions it
    return fn


def _configurables() -> dict[str, gin.config.Configurable]:
  # NOTE: gin has no public listing of registered configurables; this reads its registry.
  return dict(gin.config._REGISTRY._selector_map)  # pylint: disable=protected-access


def close_matches_hint(message: str) -> str:
  """'close matches: ...' for gin's unknown-configurable / unknown-parameter errors, else ''."""
  registry = _configurables()
  unknown = re.search(r"No configurable matching '([^']+)'", message)
  if unknown:
    names = {".".join(full.split(".")[-2:]) for full in registry} | {full.split(".")[-1] for full in registry}
    close = difflib.get_close_matches(unknown.group(1), sorted(names), n=3, cutoff=0.6)
    return f"close matches for {unknown.group(1)!r}: {close or 'none'}"
  parameter = re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", message)
  if parameter:
    configurable = next((c for full, c in registry.items() if full.endswith(parameter.group(1))), None)
    if configurable is None:
      return ""
    known = list(inspect.signature(configurable.wrapped).parameters)
    close = difflib.get_close_matches(parameter.group(2), known, n=3, cutoff=0.5)
    return f"close matches for {parameter.group(2)!r}: {close or 'none'}; {parameter.group(1)} takes {known}"
  return ""
