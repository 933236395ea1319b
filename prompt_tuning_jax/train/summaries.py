"""Training and eval scalars: TensorBoard event files plus a metrics.jsonl a script can read."""
import json
import os

import tensorboardX

from prompt_tuning_jax.train import outputs


class SummaryWriter:
  """Writes `{name: float}` per step to MODEL_DIR/{train,eval} TensorBoard runs and MODEL_DIR/metrics.jsonl;
  on a non-primary host of a multi-host run it writes nothing."""

  def __init__(self, model_dir: str):
    self._model_dir = model_dir
    self._writers: dict[str, tensorboardX.SummaryWriter] = {}
    self._jsonl = open(os.path.join(model_dir, "metrics.jsonl"), "a") if outputs.is_primary_host() else None

  def scalars(self, split: str, step: int, values: dict) -> None:
    if self._jsonl is None:
      return
    if split not in self._writers:
      self._writers[split] = tensorboardX.SummaryWriter(os.path.join(self._model_dir, split))
    for name, value in values.items():
      self._writers[split].add_scalar(name, float(value), step)
    self._jsonl.write(json.dumps({"split": split, "step": step, **{k: float(v) for k, v in values.items()}}) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    if self._jsonl is not None:
      self._jsonl.close()
