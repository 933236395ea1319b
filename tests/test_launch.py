"""prompt_tuning_jax.launch with plain Python children (no JAX): environment, prefixed output, a failing process
stops the others, SIGTERM is forwarded. The JAX jobs it runs are in tests/train/test_multihost.py."""
import signal
import subprocess
import sys
import time

import pytest

LAUNCH = [sys.executable, "-m", "prompt_tuning_jax.launch"]


def child(code):
  return [sys.executable, "-c", "import os, signal, sys, time\n" + code]


def test_each_process_gets_its_id_the_job_size_a_port_and_devices_and_prefixed_output():
  result = subprocess.run(LAUNCH + ["--num_processes=3", "--devices_per_process=2", "--"] + child(
      "print(os.environ['JAX_PROCESS_ID'], os.environ['JAX_NUM_PROCESSES'], os.environ['JAX_COORDINATOR_ADDRESS'], "
      "os.environ['XLA_FLAGS'])"), capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  lines = sorted(line for line in result.stdout.splitlines() if not line.startswith("[launch]"))
  port = lines[0].split()[3].split(":")[1]
  assert lines == [f"[{i}] {i} 3 127.0.0.1:{port} --xla_force_host_platform_device_count=2" for i in range(3)]


@pytest.mark.slow
def test_a_failed_process_stops_the_others_and_sets_the_status():
  tic = time.monotonic()
  result = subprocess.run(LAUNCH + ["--num_processes=2", "--"] + child(
      "if os.environ['JAX_PROCESS_ID'] == '1': sys.exit(7)\n"
      "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # a process that ignores SIGTERM gets SIGKILL
      "time.sleep(600)"), capture_output=True, text=True, timeout=120)
  assert result.returncode == 7
  assert time.monotonic() - tic < 60  # the grace period is 5 s; the sleeper did not keep the job alive
  assert "[launch] process 1 exited with status 7; stopped the others" in result.stderr


def test_sigterm_is_forwarded_to_every_process():
  launcher = subprocess.Popen(LAUNCH + ["--num_processes=2", "--"] + child(
      "signal.signal(signal.SIGTERM, lambda *_: (print('stopping', flush=True), sys.exit(5)))\n"
      "print('ready', flush=True)\n"
      "time.sleep(600)"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  ready = 0
  while ready < 2:
    ready += launcher.stdout.readline().endswith("ready\n")
  launcher.send_signal(signal.SIGTERM)
  output = launcher.communicate(timeout=60)[0]
  assert launcher.returncode == 5
  assert "[0] stopping" in output and "[1] stopping" in output


def test_usage_errors():
  assert subprocess.run(LAUNCH + ["--num_processes=2"], capture_output=True, timeout=60).returncode == 2
  result = subprocess.run(LAUNCH + ["--num_processes=0", "--", "true"], capture_output=True, text=True, timeout=60)
  assert result.returncode == 2 and "--num_processes=0" in result.stderr
