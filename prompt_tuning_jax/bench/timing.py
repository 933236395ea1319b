"""Interleaved timing: the settings compared in a ratio take turns, step by step.

On a shared machine the load drifts over seconds; timing ours and then PEFT (or the ensemble and then the
plain pass) one after the other would give each a different share of the cores. Taking turns, each round
of calls sees about the same load, so the medians compare like with like.
"""
import time
from typing import Callable


def error_text(e: BaseException) -> str:
  """'Type: first line of the message' (at most 240 characters of it)."""
  message = str(e).splitlines()[0][:240] if str(e) else ""
  return f"{type(e).__name__}: {message}"


def interleaved(calls: dict[str, Callable[[], None]], warmup: int, steps: int
                ) -> tuple[dict[str, list[float]], dict[str, str]]:
  """Runs each blocking call once per round for warmup + steps rounds.

  Returns:
    ({name: seconds of each timed round}, {name: error text} for the calls that raised; a call that
    raises leaves the later rounds).
  """
  times: dict[str, list[float]] = {name: [] for name in calls}
  errors: dict[str, str] = {}
  for round_index in range(warmup + steps):
    for name, call in calls.items():
      if name in errors:
        continue
      start = time.perf_counter()
      try:
        call()
      except Exception as e:  # pylint: disable=broad-except
        errors[name] = error_text(e)
        continue
      if round_index >= warmup:
        times[name].append(time.perf_counter() - start)
  return times, errors
