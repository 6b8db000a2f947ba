"""The data-parallel device mesh and the shardings of batches and state."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh (axis ``data``) over ``devices`` (default: all).

  Auto axes: the steps are written for one device and XLA partitions them from the input
  shardings (explicit-sharding mode rejects the reshapes that vmapped convolutions make).
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh(
    (len(devices),), ('data',), devices=devices, axis_types=(jax.sharding.AxisType.Auto,)
  )


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Arrays split along their first (batch) axis over the mesh."""
  return NamedSharding(mesh, P('data'))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Arrays held whole by every device of the mesh (the train state)."""
  return NamedSharding(mesh, P())


def to_global(batch: dict, sharding: NamedSharding) -> dict:
  """This process's part of a global batch -> global arrays (every process calls this)."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
