"""Training and eval scalars: TensorBoard event files plus a metrics.jsonl a script can read."""
import json
import os
from typing import Optional

import tensorboardX

from prompt_tuning_jax.train import outputs


def _step(line: str) -> Optional[int]:
  """A metrics.jsonl line's step; None for a line that is not a whole row (the torn end of a killed write)."""
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


class SummaryWriter:
  """Writes `{name: float}` per step to MODEL_DIR/{train,eval} TensorBoard runs and MODEL_DIR/metrics.jsonl;
  on a non-primary host of a multi-host run it writes nothing.

  `start_step`: the step the run starts after (0, or the checkpoint it resumed from). What an earlier attempt
  logged after that step (it stopped before its next checkpoint, and this run redoes those steps) is dropped:
  metrics.jsonl keeps its rows up to `start_step` (rewritten atomically) and TensorBoard purges the later events,
  so both hold one row per step.
  """

  def __init__(self, model_dir: str, start_step: int = 0):
    self._model_dir = model_dir
    self._purge_step = start_step + 1
    self._writers: dict[str, tensorboardX.SummaryWriter] = {}
    self._jsonl = None
    if outputs.is_primary_host():
      path = os.path.join(model_dir, "metrics.jsonl")
      if os.path.isfile(path):
        with open(path) as f:
          kept = [line for line in f if (step := _step(line)) is not None and step <= start_step]
        outputs.write_text(path, "".join(kept))
      self._jsonl = open(path, "a")

  def scalars(self, split: str, step: int, values: dict) -> None:
    if self._jsonl is None:
      return
    if split not in self._writers:
      self._writers[split] = tensorboardX.SummaryWriter(os.path.join(self._model_dir, split),
                                                        purge_step=self._purge_step)
    for name, value in values.items():
      self._writers[split].add_scalar(name, float(value), step)
    self._jsonl.write(json.dumps({"split": split, "step": step, **{k: float(v) for k, v in values.items()}}) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    if self._jsonl is not None:
      self._jsonl.close()
