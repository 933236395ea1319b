"""The official files' line formats and the converters that turn their lines into canonical examples.

A `FileFormat` cuts a file into records (JSON lines; tab-separated GLUE files; tasks/ner.py adds CoNLL
columns); a `Converter` turns one record into canonical examples (TFDS's feature names and label ids;
tasks/sources.py). `read_examples` reads one file through both.

A malformed line (bad JSON, wrong column count, missing field, unknown label) raises `MalformedLineError`
naming the file and line; with `skip_malformed=True` it is skipped and the count is logged as a warning.
"""
import csv
import dataclasses
import json
from typing import Any, Callable, Iterator, Mapping, Sequence

from absl import logging

UNLABELED = -1  # the label of an unlabeled (test) row, as in TFDS

Record = Any  # one parsed line (dict) or sentence
Converter = Callable[[Record, int], list[dict]]  # (record, row number) -> canonical examples (may be empty)


class MalformedLineError(ValueError):
  """A data line that cannot be read; the message starts with `file:line:`."""


@dataclasses.dataclass(frozen=True)
class FileFormat:
  """How to cut a file into records: `rows(path)` yields (line number, payload); `parse(payload)` -> record."""
  rows: Callable[[str], Iterator[tuple[int, Any]]]
  parse: Callable[[Any], Record]


def _lines(path: str) -> Iterator[tuple[int, str]]:
  with open(path, encoding="utf-8-sig") as f:  # -sig: MRPC's files start with a BOM
    for number, line in enumerate(f, start=1):
      if line.strip():
        yield number, line


JSON_LINES = FileFormat(_lines, json.loads)


def tsv(columns: Sequence[str] | None = None) -> FileFormat:
  """Tab-separated, no quoting (GLUE). `columns` for files without a header line (CoLA train/dev)."""
  def rows(path: str) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
      reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
      names = list(columns) if columns else next(reader, [])
      for fields in reader:
        if fields:
          yield reader.line_num, (names, fields)

  def parse(payload):
    names, fields = payload
    if len(fields) != len(names):
      raise ValueError(f"{len(fields)} tab-separated fields, the header has {len(names)}")
    return dict(zip(names, fields))

  return FileFormat(rows, parse)


def read_examples(path: str, file_format: FileFormat, convert: Converter,
                  skip_malformed: bool = False) -> list[dict]:
  """All canonical examples of one local file (module docstring for malformed lines)."""
  examples, skipped = [], 0
  for row, (line, payload) in enumerate(file_format.rows(path)):
    try:
      examples.extend(convert(file_format.parse(payload), row))
    except MalformedLineError:
      if not skip_malformed:
        raise
      skipped += 1
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
      if not skip_malformed:
        raise MalformedLineError(f"{path}:{line}: malformed line ({type(e).__name__}: {e}); fix it or pass "
                                 "skip_malformed=True to skip such lines") from None
      skipped += 1
  if skipped:
    logging.warning("%s: skipped %d malformed line(s)", path, skipped)
  return examples


def label_id(value: Any, label_values: Sequence[str]) -> int:
  """Index of a raw label (JSON true -> 'True', 0 -> '0') in `label_values`; ValueError if unknown."""
  text = str(value)
  if text not in label_values:
    raise ValueError(f"label {text!r} is not one of {list(label_values)}")
  return label_values.index(text)


def fields_and_label(fields: Mapping[str, str], label_key: str | None, label_values: Sequence[str] | None,
                     idx_key: str | None = None, drop_labels: Sequence[str] = (), flatten: str | None = None,
                     int_fields: Sequence[str] = ()) -> Converter:
  """Converter for one-example-per-line data.

  Args:
    fields: canonical name -> raw key.
    label_key: raw label key; a missing label gives -1 (unlabeled test rows).
    label_values: raw label values in label-id order; None for a float label (STS-B).
    idx_key: raw key of the example index; None uses the row number (as TFDS does for GLUE).
    drop_labels: raw labels whose rows are dropped (CLUE NLI's '-': no annotator majority).
    flatten: a nested dict whose keys are lifted to the top level first (WSC's 'target').
    int_fields: canonical fields cast to int (character offsets).
  """
  def convert(record: dict, row: int) -> list[dict]:
    if not isinstance(record, dict):
      raise TypeError(f"expected a JSON object / header row, got {type(record).__name__}")
    if flatten:
      record = {**record, **record[flatten]}
    example = {name: int(record[key]) if name in int_fields else _text(record[key]) for name, key in fields.items()}
    example["idx"] = int(record[idx_key]) if idx_key else row
    raw = record.get(label_key) if label_key else None
    if raw is not None and str(raw) in drop_labels:
      return []
    if label_values is None:
      example["label"] = float(raw) if raw not in (None, "") else float(UNLABELED)
    else:
      example["label"] = UNLABELED if raw is None else label_id(raw, label_values)
    return [example]
  return convert


def _text(value: Any) -> str:
  """A raw field as text; lists (CSL's keywords) are joined with ', '."""
  return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
