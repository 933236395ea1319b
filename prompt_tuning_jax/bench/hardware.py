"""The device a run uses and its stated peak FLOP/s, the denominator of MFU.

Accelerator peaks are dense bf16 tensor throughput per chip from the vendors' data sheets (no sparsity).
The CPU entry is computed, not looked up: cores x FLOPs per cycle x clock, in float32, where FLOPs per
cycle is 64 with AVX-512 (two 512-bit FMA pipes: 2 x 16 lanes x 2), 32 with AVX2 + FMA, else 8, and the
clock is /proc/cpuinfo's 'cpu MHz' when present, else an assumed CPU_DEFAULT_GHZ. It is a stated
ceiling to compare rows by, not a measured one.
"""
import os
import platform
import subprocess
from typing import Optional

import jax

PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    # (substring of jax's device_kind, dense bf16 TFLOP/s per device); the first match wins.
    ("H200", 989.0),        # H200 SXM
    ("H100 PCIe", 756.0),
    ("H100", 989.0),        # H100 SXM / HBM3
    ("A100", 312.0),
    ("TPU v4", 275.0),
    ("TPU v5 lite", 197.0),  # v5e
    ("TPU v5e", 197.0),
    ("TPU v5p", 459.0),
)
CPU_DEFAULT_GHZ = 3.0


def _cpu_flags() -> set[str]:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          return set(line.split(":", 1)[1].split())
  except OSError:
    pass
  return set()


def _cpu_ghz() -> Optional[float]:
  try:
    with open("/proc/cpuinfo") as f:
      mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
  except (OSError, ValueError):
    return None
  return max(mhz) / 1000.0 if mhz else None


def cpu_peak() -> tuple[float, str]:
  """(float32 peak FLOP/s of this CPU, how it was computed)."""
  flags, cores = _cpu_flags(), os.cpu_count() or 1
  per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
  ghz = _cpu_ghz()
  clock = f"{ghz:.2f} GHz (/proc/cpuinfo)" if ghz else f"{CPU_DEFAULT_GHZ} GHz (assumed; no clock reported)"
  ghz = ghz or CPU_DEFAULT_GHZ
  return cores * per_cycle * ghz * 1e9, f"{cores} cores x {per_cycle} FLOP/cycle (float32) x {clock}"


def device_info() -> dict:
  """{'platform', 'device_kind', 'num_devices', 'peak_flops' (per device, None if unknown), 'peak_source',
  'cpu', 'cpu_count'}; every row runs on one device."""
  device = jax.devices()[0]
  kind = device.device_kind
  if device.platform == "cpu":
    peak, source = cpu_peak()
  else:
    match = next(((name, tflops) for name, tflops in PEAK_BF16_TFLOPS if name in kind), None)
    peak = match[1] * 1e12 if match else None
    source = f"{match[0]}: {match[1]} TFLOP/s dense bf16 (data sheet)" if match else f"{kind!r} not in the table"
  return {"platform": device.platform, "device_kind": kind, "num_devices": jax.device_count(),
          "peak_flops": peak, "peak_source": source, "cpu": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count()}


def uptime() -> str:
  """`uptime`'s line (load averages over 1, 5, 15 minutes), or os.getloadavg() where it is missing."""
  try:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=True, timeout=5).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
