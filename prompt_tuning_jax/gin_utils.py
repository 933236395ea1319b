"""gin plumbing for the entry points: t5x-style `--gin_file` / `--gin.NAME=value` flags.

Gin files are looked up relative to the working directory and to the installed `gin/` folder
(`prompt_tuning_jax.gin`), so `--gin_file=models/t5_1_1_base.gin` works from anywhere.
"""
import importlib.resources
import os
import pathlib
from typing import Sequence

import gin


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


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (), finalize: bool = True) -> None:
  """Clears gin, then parses the files (searched on gin_search_paths) and the bindings."""
  gin.clear_config()
  for path in gin_search_paths():
    gin.add_config_file_search_path(path)
  gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings), finalize_config=finalize)
