"""The issue's targets (issue 5), judged against one run's results: met, missed or pending.

Each target reads ratios measured in the same run on the same machine. GPU targets are 'pending' on a
CPU run; a target whose row is not in the run's grid is 'pending' too. Memory ratios use our step's XLA
footprint (ours.memory_bytes) against torch's peak allocated bytes; both exist on GPU only for PEFT.
"""
from typing import Any, Callable, Optional

PENDING_GPU = "pending: no GPU machine was lent to this task"
GPU_SHAPES = {"batch": 32, "input_length": 512, "target_length": 16, "prompt_length": 100}
CPU_MINILM = {"model": "minilm", "method": "prompt_tuning", "batch": 32, "input_length": 128, "prompt_length": 20}


def find_row(rows: list[dict], **fields: Any) -> Optional[dict]:
  """The first result row whose settings match `fields`."""
  return next((r for r in rows if all(r["row"].get(k) == v for k, v in fields.items())), None)


def _judge(name: str, threshold: str, value: Optional[float], ok: Callable[[float], bool],
           pending: Optional[str] = None, note: str = "") -> dict:
  if pending is not None or value is None:
    return {"target": name, "threshold": threshold, "measured": None, "status": pending or "pending: not measured",
            "note": note}
  return {"target": name, "threshold": threshold, "measured": value, "status": "met" if ok(value) else "missed",
          "note": note}


def _ratio(row: Optional[dict], key: str) -> Optional[float]:
  return None if row is None else row.get("ratio", {}).get(key)


def _gpu_targets(result: dict) -> list[dict]:
  rows, gpu = result["rows"], result["device"]["platform"] == "gpu"
  pending = None if gpu else PENDING_GPU
  large = find_row(rows, model="t5_1_1_large", method="prompt_tuning", **GPU_SHAPES)
  base = find_row(rows, model="t5_1_1_base", method="prompt_tuning", **GPU_SHAPES)
  out = [
      _judge("GPU T5 1.1 large prompt tuning tokens/s vs PEFT", ">= 6x", _ratio(large, "tokens_per_s"),
             lambda v: v >= 6.0, pending),
      _judge("GPU T5 1.1 large prompt tuning MFU", ">= 45%", None if large is None else large["ours"].get("mfu"),
             lambda v: v >= 0.45, pending),
      _judge("GPU T5 1.1 large prompt tuning peak memory vs PEFT", "<= 1/3", _ratio(large, "memory"),
             lambda v: v <= 1.0 / 3.0, pending),
      _judge("GPU T5 1.1 base prompt tuning tokens/s vs PEFT", ">= 5x", _ratio(base, "tokens_per_s"),
             lambda v: v >= 5.0, pending),
  ]
  for model in ("t5_1_1_base", "t5_1_1_large"):
    lora = find_row(rows, model=model, method="lora", lora_rank=8, **GPU_SHAPES)
    out.append(_judge(f"GPU {model} LoRA (r=8, q, v) tokens/s vs PEFT LoRA", ">= 3x", _ratio(lora, "tokens_per_s"),
                      lambda v: v >= 3.0, pending))
  xxl = find_row(rows, model="t5_1_1_xxl", method="prompt_tuning", batch=32)
  fits = None if xxl is None else xxl["ours"].get("xla_memory_bytes")
  out.append(_judge("GPU T5 1.1 xxl prompt tuning compile (scanned layers)", "< 120 s",
                    None if xxl is None or not xxl["options"]["scan_layers"] else xxl["ours"]["compile_s"],
                    lambda v: v < 120.0, pending))
  out.append(_judge("GPU T5 1.1 xxl prompt tuning at batch 32 fits one 80 GB GPU", "<= 80e9 bytes, finite loss",
                    None if fits is None or not xxl["ours"]["finite_loss"] else float(fits),
                    lambda v: v <= 80e9, pending))
  return out


def evaluate(result: dict) -> list[dict]:
  """Every target of the issue as {'target', 'threshold', 'measured', 'status', 'note'}."""
  out = _gpu_targets(result)
  for entry in result.get("flop_ratios", []):
    out.append(_judge(f"{entry['model']} prompt tuning FLOPs / full fine-tuning FLOPs (same shapes)", "<= 0.70",
                      entry["same_shapes"], lambda v: v <= 0.70,
                      note=f"vs the full fine-tuning row without the prompt: {entry['vs_no_prompt']:.3f}"))
  if not result.get("flop_ratios"):
    out.append(_judge("prompt tuning FLOPs / full fine-tuning FLOPs (same shapes)", "<= 0.70", None, bool))
  for entry in result.get("ensembles", []):
    worst = max(entry["flop_ratio"], entry["time_ratio"])
    out.append(_judge(f"{entry['model']} K={entry['num_prompts']} prompt ensemble vs plain pass over "
                      f"{entry['num_prompts']}x the batch (max of FLOP and time ratios)", "<= 1.1x", worst,
                      lambda v: v <= 1.1, note=f"FLOPs {entry['flop_ratio']:.3f}, time {entry['time_ratio']:.3f}"))
  if not result.get("ensembles"):
    out.append(_judge("K=8 prompt ensemble vs plain pass over 8x the batch", "<= 1.1x", None, bool))
  cpu = result["device"]["platform"] == "cpu"
  minilm = find_row(result["rows"], **CPU_MINILM)
  out.append(_judge(f"CPU ({result['device']['cpu_count']} cores) MiniLM prompt tuning step rate vs PEFT",
                    ">= 1.5x", _ratio(minilm, "tokens_per_s"), lambda v: v >= 1.5,
                    None if cpu else "pending: a CPU run"))
  return out
