"""`python -m prompt_tuning_jax.bench --end_to_end` on real RTE with the real MiniLM: two steps per loop.

The loops run (ours through the bucketed pipeline and ours padded, HF with dynamic padding and with length
grouping), each reports what it consumed (widths, real tokens) consistently, and the files are written.
"""
import json
import os

import pytest

from prompt_tuning_jax.bench import __main__ as bench_main
from prompt_tuning_jax.bench import end_to_end
from tasks import buckets


@pytest.mark.slow
def test_end_to_end_rows_and_files(tmp_path, monkeypatch, minilm_dir):
  monkeypatch.setattr(end_to_end, "TASKS", {**end_to_end.TASKS, "rte": ("bert_glue_rte", 64)})
  out_dir = str(tmp_path / "e2e")
  assert bench_main.main(["--end_to_end", "--tasks", "rte", "--methods", "lora", "--batch", "4", "--examples", "8",
                          "--out_dir", out_dir]) == 0
  with open(os.path.join(out_dir, "end_to_end.json")) as f:
    result = json.load(f)
  [row] = result["rows"]
  assert row["task"] == "bert_glue_rte" and row["steps"] == 2 and set(end_to_end.LOOPS) <= set(row)
  ladder = buckets.LengthBuckets().ladder(64)
  assert all(width in ladder for width in row["ours"]["widths"]) and row["ours_padded"]["widths"] == [64, 64]
  for name in end_to_end.LOOPS:
    loop = row[name]
    assert len(loop["step_times_s"]) == 2 and 0 <= loop["padding_share"] < 1 and loop["examples_per_s"] > 0
    assert loop["compiles"] == (len(set(loop["widths"])) if name.startswith("ours") else 0)
    assert 0 < loop["mean_real_length"] <= max(loop["widths"])
  assert set(row["ratio_vs_hf_dynamic"]) >= {"examples_per_s"}
  table = open(os.path.join(out_dir, "end_to_end.md")).read()
  assert table.count("| bert_glue_rte (64) | lora |") == 4 and "--end_to_end" in table


def test_end_to_end_refuses_unknown_names(capsys):
  assert bench_main.main(["--end_to_end", "--tasks", "sst3"]) == 2
  assert "unknown ['sst3']" in capsys.readouterr().err
