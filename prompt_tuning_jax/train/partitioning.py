"""The (data, model) device mesh and the logical-axis rules that place parameters and batches on it.

Parameters carry logical axis names (models/layers.py); `LOGICAL_AXIS_RULES` maps each name to a mesh axis,
t5x-style, and `jax.jit` does the rest from the `NamedSharding`s of its inputs. Typical use:

  mesh = create_mesh(num_partitions=4)                      # data = n_devices // 4, model = 4
  abstract = jax.eval_shape(model.init, rng, enc, dec)['params']   # boxed, shapes only
  params = jax.device_put(plain_params, logical_to_mesh_sharding(abstract, mesh))
  loss = jax.jit(loss_fn)(params, shard_batch(batch, mesh))
"""
import logging
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, Optional[str]]]

logger = logging.getLogger(__name__)

# Logical axis name -> mesh axis ('data', 'model' or None = replicated), in order of precedence (flax
# `logical_to_mesh_axes`: within one array a mesh axis is used at most once, the earlier rule wins).
# A name not listed here is replicated, exactly as if it mapped to None; the PEFT names are listed anyway
# to make that choice visible. A plain tuple of pairs so gin can override it, e.g. ('embed', 'data') for
# fully-sharded data parallelism.
LOGICAL_AXIS_RULES: tuple[tuple[str, Optional[str]], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("kv", None),
    ("embed", None),
    ("length", None),
    ("layers", None),
    ("relpos_buckets", None),
    # BERT.
    ("positions", None),
    ("token_types", None),
    ("labels", None),
    # PEFT parameters are small: replicate them.
    ("prompt", None),
    ("adapter", None),
    ("lora_rank", None),
    ("prefix", None),
    ("special_tokens", None),
    ("fl_units", None),
)


def create_mesh(num_partitions: int = 1, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A ('data', 'model') mesh of shape [n_devices // num_partitions, num_partitions].

  `devices` defaults to `jax.devices()`, every device of every host, so the same call builds the global
  mesh on a multi-host pod. `mesh_utils.create_device_mesh` orders devices along the physical topology
  (TPU torus, GPU ids); where it cannot map the requested shape the devices are reshaped in their order.
  """
  devices = list(jax.devices() if devices is None else devices)
  if num_partitions < 1 or len(devices) % num_partitions:
    raise ValueError(f"num_partitions={num_partitions} must be a positive divisor of the number of "
                     f"devices {len(devices)}")
  shape = (len(devices) // num_partitions, num_partitions)
  try:
    device_array = mesh_utils.create_device_mesh(shape, devices)
  except NotImplementedError as error:  # A TPU topology that cannot be split into this shape.
    logger.warning("create_device_mesh(%s) failed (%s); reshaping the devices in order", shape, error)
    device_array = np.asarray(devices).reshape(shape)
  return Mesh(device_array, ("data", "model"))


def _unbox(tree: Any) -> Any:
  """Boxed (`nn.Partitioned`) leaves -> their values, without sharding constraints; plain leaves pass."""
  is_boxed = lambda x: isinstance(x, nn.Partitioned)
  return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_boxed(x) else x, tree, is_leaf=is_boxed)


def _divisible_spec(name: str, shape: Sequence[int], logical: PartitionSpec, spec: PartitionSpec,
                    mesh: Any) -> PartitionSpec:
  """Replicates (with a log line) each dimension of `shape` that its mesh axes do not divide evenly."""
  axes = list(spec)
  for dim, (size, mesh_axes) in enumerate(zip(shape, axes)):
    if mesh_axes is None:
      continue
    names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
    num_shards = math.prod(mesh.shape[axis] for axis in names)
    if size % num_shards:
      logger.warning("%s: dimension %d (%r) of size %d is not divisible by mesh axes %s of size %d; "
                     "replicating it", name, dim, logical[dim], size, names, num_shards)
      axes[dim] = None
  return PartitionSpec(*axes)


def logical_to_mesh_sharding(abstract_params: Any, mesh: Mesh,
                             rules: LogicalRules = LOGICAL_AXIS_RULES) -> Any:
  """Boxed parameter tree (arrays or `jax.ShapeDtypeStruct`s) -> tree of `NamedSharding`.

  The result has the structure of the unboxed tree. Leaves without axis names are replicated; a
  dimension that its mesh axis does not divide is replicated too (logged per parameter), so small
  test configs with odd sizes still run on any mesh.
  """
  logical_specs = nn.get_partition_spec(abstract_params)
  shapes = jax.tree.map(np.shape, _unbox(abstract_params))

  def to_sharding(path, logical, shape):
    spec = nn.logical_to_mesh_axes(logical, rules)
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    return NamedSharding(mesh, _divisible_spec(name, shape, logical, spec, mesh))

  is_spec = lambda x: isinstance(x, PartitionSpec)
  return jax.tree_util.tree_map_with_path(to_sharding, logical_specs, shapes, is_leaf=is_spec)


def shard_params(params: Any, mesh: Mesh, rules: LogicalRules = LOGICAL_AXIS_RULES) -> Any:
  """Places a boxed (or plain) parameter tree on `mesh` by its axis names; returns plain arrays.

  Plain leaves carry no axis names and are replicated: to place a plain tree (e.g. a loaded checkpoint)
  by the model's axes, use `jax.device_put(params, logical_to_mesh_sharding(abstract_boxed, mesh))`.
  """
  return jax.device_put(_unbox(params), logical_to_mesh_sharding(params, mesh, rules))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over 'data', the rest replicated over 'model'."""
  return NamedSharding(mesh, PartitionSpec("data"))


def host_rows(mesh: Mesh, batch_size: int) -> slice:
  """The rows [start, stop) of a global batch of `batch_size` that this process feeds: those its devices hold
  under `batch_sharding` (t5x's data layout). A pure data-parallel mesh gives process i of N the rows
  [i*b/N, (i+1)*b/N); a 'model' axis across processes makes them share rows (each then feeds them all)."""
  if batch_size % mesh.shape["data"]:
    raise ValueError(f"global batch size {batch_size} is not divisible by the mesh's data axis of size "
                     f"{mesh.shape['data']}")
  indices = batch_sharding(mesh).addressable_devices_indices_map((batch_size,)).values()
  spans = sorted({index[0].indices(batch_size)[:2] for index in indices})
  if any(stop != start for (_, stop), (start, _) in zip(spans, spans[1:])):
    raise ValueError(f"this process's devices hold the batch rows {spans} of {batch_size}, not one contiguous "
                     f"block; order the mesh's devices by process")
  return slice(spans[0][0], spans[-1][1])


def shard_batch(batch: Mapping[str, Any], mesh: Mesh, batch_size: Optional[int] = None) -> dict[str, jax.Array]:
  """This process's rows {name: [rows, ...]} of a global batch -> global arrays [batch_size, ...] split over 'data'.

  Single process: `batch` is the global batch and is `device_put`. Multi-process: `batch` holds the rows
  `host_rows(mesh, batch_size)` and the global arrays are assembled with `jax.make_array_from_process_local_data`.
  `batch_size` defaults to the rows times the number of processes (a pure data-parallel mesh).
  """
  sharding = batch_sharding(mesh)
  num_processes = jax.process_count()
  data_size = mesh.shape["data"]

  def place(name, array):
    global_batch = batch_size or np.shape(array)[0] * num_processes
    if global_batch % data_size:
      raise ValueError(f"batch feature {name!r}: global batch size {global_batch} is not divisible by the "
                       f"mesh's data axis of size {data_size}")
    if num_processes == 1:
      return jax.device_put(array, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(array), (global_batch,) + np.shape(array)[1:])

  return {name: place(name, array) for name, array in batch.items()}


def to_host(array: Any) -> np.ndarray:
  """A (global) array -> its whole value as numpy on every process; an all-gather across processes when this
  process holds only part of it (then every process must call it, as for any computation on the mesh)."""
  if getattr(array, "is_fully_addressable", True):
    return np.asarray(array)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def run_sharded(fn: Callable[[dict], Any], batch: Mapping[str, np.ndarray], mesh: Optional[Mesh]) -> Any:
  """`fn(batch)` (a jitted batch -> arrays) as numpy, the batch rows split over the mesh's 'data' axis: each
  process feeds only its rows (`host_rows`) and every process gets the whole result (`to_host`).

  `batch` is the global batch {name: [b, ...]} (the same on every process); mesh=None runs on one device.
  Multi-process: every process must call it with the same batch shapes, as for any computation on the mesh.
  """
  if mesh is None:
    return jax.tree.map(np.asarray, fn(dict(batch)))
  batch_size = len(next(iter(batch.values())))
  rows = host_rows(mesh, batch_size)
  with jax.set_mesh(mesh):
    result = fn(shard_batch({name: value[rows] for name, value in batch.items()}, mesh, batch_size))
  return jax.tree.map(to_host, result)
