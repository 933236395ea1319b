"""PEFT-only training checkpoints with orbax: trainable leaves, optimizer state, step, data position.

The frozen base is never saved: it always comes from INITIAL_CHECKPOINT_PATH. A checkpoint is
`MODEL_DIR/checkpoints/<step>/{state,meta}`; orbax writes it to a temporary directory and renames it
when complete, so a crash mid-save never leaves a half-written step behind. Restoring walks back from
the newest step and skips (with a warning) a step that fails to read, e.g. truncated by hand.

Retention: the newest `keep_last` steps plus the best `keep_best` by `best_metric` (from `metrics`).
A run's checkpoint options, its save period and this retention, are one `Checkpointing` record.
"""
import dataclasses
import logging
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from prompt_tuning_jax.train import outputs

log = logging.getLogger(__name__)


class PeftCheckpointManager:
  """Saves and restores `{'trainable': ..., 'opt_state': ...}` trees plus JSON metadata per step.

  Attributes:
    directory: where the step directories live (MODEL_DIR/checkpoints).
    keep_last / keep_best: retention; best_metric: the key of `metrics` ranking checkpoints.
    best_mode: 'max' or 'min'.
  """

  def __init__(self, directory: str, *, keep_last: int = 2, keep_best: int = 1,
               best_metric: Optional[str] = None, best_mode: str = "max"):
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode={best_mode!r}; expected 'max' or 'min'")
    self.directory = os.path.abspath(directory)
    self.keep_last, self.keep_best = keep_last, keep_best
    self.best_metric, self.best_mode = best_metric, best_mode
    options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
        "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, metadata: dict, metrics: Optional[dict] = None) -> None:
    """Writes step `step` atomically, then applies the retention policy."""
    metadata = {**metadata, "step": int(step), "metrics": metrics or {}}
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(metadata)), force=True)
    self._manager.wait_until_finished()
    self._apply_retention()

  def update_metrics(self, step: int, metrics: dict) -> None:
    """Records eval metrics for an existing step (used for best-K retention)."""
    meta = self.read_metadata(step)
    meta["metrics"] = {**meta.get("metrics", {}), **metrics}
    outputs.write_json(os.path.join(self.directory, str(step), "meta", "metadata"), meta)
    self._apply_retention()

  def read_metadata(self, step: int) -> dict:
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore_latest(self, abstract_state: Any) -> Optional[tuple[Any, dict]]:
    """(state, metadata) of the newest readable step, or None when there is none.

    A step that cannot be read is skipped with a warning naming it and the error.
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
    unreadable = []
    for step in reversed(self.steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as error:  # pylint: disable=broad-except
        log.warning("checkpoint step %d in %s is unreadable (%s: %s); trying the previous one",
                    step, self.directory, type(error).__name__, (str(error).splitlines() or [""])[0][:200])
        unreadable.append(step)
        continue
      self._quarantine(unreadable)
      return restored["state"], restored["meta"]
    self._quarantine(unreadable)
    return None

  def _quarantine(self, steps: list[int]) -> None:
    """Moves unreadable steps to <directory>.unreadable/<step> (kept for inspection, never resumed from),
    so that training can write those steps again."""
    if not steps:
      return
    target = self.directory + ".unreadable"
    for step in steps if outputs.is_primary_host() else ():  # one process moves them, the others wait
      os.makedirs(target, exist_ok=True)
      destination = os.path.join(target, str(step))
      if os.path.exists(destination):
        destination += f".{len(os.listdir(target))}"
      os.replace(os.path.join(self.directory, str(step)), destination)
      log.warning("moved unreadable checkpoint step %d to %s", step, destination)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"quarantine {self.directory}")
    self._manager.reload()

  def _apply_retention(self) -> None:
    steps = self.steps()
    keep = set(steps[-self.keep_last:]) if self.keep_last > 0 else set()
    if self.best_metric and self.keep_best > 0:
      scored = []
      for step in steps:
        try:
          value = self.read_metadata(step).get("metrics", {}).get(self.best_metric)
        except Exception:  # pylint: disable=broad-except
          value = None  # unreadable steps are never "best"
        if value is not None:
          scored.append((value, step))
      scored.sort(reverse=self.best_mode == "max")
      keep |= {step for _, step in scored[:self.keep_best]}
    for step in steps:
      if step not in keep:
        self._manager.delete(step)

  def best_step(self) -> Optional[int]:
    """The retained step with the best `best_metric`, if any was recorded."""
    scored = [(self.read_metadata(s).get("metrics", {}).get(self.best_metric), s) for s in self.steps()]
    scored = [(v, s) for v, s in scored if v is not None]
    if not scored:
      return None
    return (max if self.best_mode == "max" else min)(scored)[1]

  def restore_trainable(self, step: Any = "latest") -> tuple[dict, int]:
    """(trainable leaves, step) of step 'latest' (the newest readable), 'best' or a step number.

    Reads only the saved tree as stored (no optimizer to rebuild), onto this process's first device whatever
    the devices and processes of the job that wrote it: for evaluation and export.
    """
    if step == "best":
      step = self.best_step()
      if step is None:
        raise ValueError(f"{self.directory}: no step has a recorded {self.best_metric!r} metric to pick 'best'")
    candidates = list(reversed(self.steps())) if step == "latest" else [int(step)]
    if not candidates or (step != "latest" and int(step) not in self.steps()):
      raise FileNotFoundError(f"{self.directory}: no checkpoint step {step!r}; available: {self.steps()}")
    for candidate in candidates:
      try:
        one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=one_device),
                                        self._manager.item_metadata(candidate)["state"].tree)
        restored = self._manager.restore(candidate, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
      except Exception as error:  # pylint: disable=broad-except
        if step != "latest":
          raise
        log.warning("checkpoint step %d in %s is unreadable (%s); trying the previous one", candidate,
                    self.directory, type(error).__name__)
        continue
      return restored["state"]["trainable"], candidate
    raise FileNotFoundError(f"{self.directory}: no readable checkpoint step among {self.steps()}")


@dataclasses.dataclass(frozen=True)
class Checkpointing:
  """When a run saves its PEFT-only checkpoints and which it keeps (gin: `peft_io.Checkpointing.<field>`).

  Attributes:
    period: save every this many steps (and at the end).
    keep_last / keep_best: retention, the newest `keep_last` steps plus the best `keep_best` by `best_metric`.
    best_metric: the evaluation metric that ranks checkpoints; None keeps no best.
  """
  period: int = 100
  keep_last: int = 2
  keep_best: int = 1
  best_metric: Optional[str] = None

  def manager(self, directory: str) -> PeftCheckpointManager:
    """The checkpoint manager of `directory` with this retention."""
    return PeftCheckpointManager(directory, keep_last=self.keep_last, keep_best=self.keep_best,
                                 best_metric=self.best_metric)
