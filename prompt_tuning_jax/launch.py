"""Runs one command as N JAX processes on this machine: multi-host on a laptop, with JAX's own runtime.

  python -m prompt_tuning_jax.launch --num_processes=2 [--devices_per_process=2] -- \
      python -m prompt_tuning_jax.train --gin_file=... --gin.MODEL_DIR="'/tmp/run'" ...

Each process gets the environment `jax.distributed` needs (cli.maybe_initialize_distributed reads it):
JAX_COORDINATOR_ADDRESS (127.0.0.1 and a free port), JAX_NUM_PROCESSES, JAX_PROCESS_ID, and XLA_FLAGS with
`--xla_force_host_platform_device_count=D` (CPU devices per process; CPU collectives run over gloo). Each output
line is prefixed with `[i] `, the process id. SIGINT / SIGTERM are forwarded to every process. As soon as one
process fails (a non-zero status or a signal) the others get SIGTERM, then SIGKILL after `GRACE_SECONDS`, and
the launcher exits with the failed process's status (128 + signal for a signal), so a job never hangs on a
dead peer. On a pod, run the command itself on every host with `--multiprocess` instead (README, "Multi-host").
"""
import argparse
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence

GRACE_SECONDS = 5.0
"""How long stopped processes get between SIGTERM and SIGKILL."""


def free_port() -> int:
  """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
  with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def process_env(base: dict[str, str], process_id: int, num_processes: int, port: int,
                devices_per_process: int) -> dict[str, str]:
  """`base` plus what process `process_id` of `num_processes` needs to join the job."""
  flags = [f for f in base.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  return {**base, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(num_processes),
          "JAX_PROCESS_ID": str(process_id), "PYTHONUNBUFFERED": "1",
          "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={devices_per_process}"])}


def _die_with_parent() -> None:
  """In the child, before exec: SIGKILL when the launcher dies (Linux prctl PR_SET_PDEATHSIG; no-op elsewhere)."""
  with contextlib.suppress(OSError, AttributeError):
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _pump(process_id: int, stream, lock: threading.Lock) -> None:
  """Copies a child's output to ours, each line prefixed with `[process_id] `."""
  for raw in iter(stream.readline, b""):
    with lock:
      sys.stdout.write(f"[{process_id}] {raw.decode(errors='replace').rstrip()}\n")
      sys.stdout.flush()


def _status(returncode: int) -> int:
  """A Popen return code -> a shell exit status (a signal N becomes 128 + N)."""
  return 128 - returncode if returncode < 0 else returncode


def launch(command: Sequence[str], num_processes: int, devices_per_process: int = 1,
           poll_seconds: float = 0.05) -> int:
  """Runs `command` as `num_processes` JAX processes; returns 0 when all succeed, else the first failure's status."""
  if num_processes < 1 or devices_per_process < 1:
    raise ValueError(f"launch: --num_processes={num_processes} and --devices_per_process={devices_per_process} "
                     f"must be >= 1")
  if not command:
    raise ValueError("launch: no command after `--` (e.g. -- python -m prompt_tuning_jax.train --gin_file=...)")
  port, lock = free_port(), threading.Lock()
  processes, pumps = [], []
  for i in range(num_processes):
    process = subprocess.Popen(list(command), env=process_env(dict(os.environ), i, num_processes, port,
                                                              devices_per_process),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=_die_with_parent)
    processes.append(process)
    print(f"[launch] process {i} of {num_processes}: pid {process.pid}, coordinator 127.0.0.1:{port}", flush=True)
  for i, process in enumerate(processes):  # threads only after the last fork (preexec_fn and threads do not mix)
    pumps.append(threading.Thread(target=_pump, args=(i, process.stdout, lock), daemon=True))
    pumps[-1].start()

  received: list[int] = []

  def forward(signum, _frame):
    received.append(signum)
    for process in processes:
      if process.poll() is None:
        process.send_signal(signum)
  previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    failed = _wait(processes, poll_seconds, received)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  for pump in pumps:
    pump.join(timeout=GRACE_SECONDS)
  if failed is None:
    return 0
  print(f"[launch] process {failed} exited with status {_status(processes[failed].returncode)}"
        + ("; stopped the others" if num_processes > 1 else ""), file=sys.stderr, flush=True)
  return _status(processes[failed].returncode) or 1


def _wait(processes: list[subprocess.Popen], poll_seconds: float, received: list[int]) -> Optional[int]:
  """Waits for every process; on the first failure (or a forwarded signal) stops the rest. -> the first failed
  process's index, None when all succeeded."""
  failed, deadline = None, None
  while True:
    codes = [p.poll() for p in processes]
    if failed is None:
      failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
      if failed is not None:
        for process in processes:
          if process.poll() is None:
            process.terminate()
    if deadline is None and (failed is not None or received):  # a forwarded signal gets the same grace period
      deadline = time.monotonic() + GRACE_SECONDS
    if deadline is not None and time.monotonic() > deadline:
      for process in processes:
        if process.poll() is None:
          process.kill()
    if all(code is not None for code in codes):
      return failed
    time.sleep(poll_seconds)


def main(argv: Sequence[str]) -> int:
  if "--" not in argv:
    print("usage: python -m prompt_tuning_jax.launch --num_processes=N [--devices_per_process=D] -- <command>",
          file=sys.stderr)
    return 2
  split = list(argv).index("--")
  parser = argparse.ArgumentParser(prog="python -m prompt_tuning_jax.launch")
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--devices_per_process", type=int, default=1)
  args = parser.parse_args(argv[:split])
  try:
    return launch(argv[split + 1:], args.num_processes, args.devices_per_process)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
