"""How a function's work splits over a data-parallel mesh: XLA's per-device FLOPs."""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mimic_jax.runtime import mesh as mesh_lib


def split_ratio(f, replicated, *batch) -> float:
  """Per-device FLOPs of ``jax.jit(f)(replicated, *batch)`` with the ``batch`` arrays split
  over 2 devices (``mesh_lib.make_mesh``), divided by the FLOPs on one device: 0.5 when each
  device computes only its own examples, near 1 where XLA replicates the work."""

  def per_device_flops(devices):
    mesh = mesh_lib.make_mesh(devices)
    split = NamedSharding(mesh, P('data'))
    with jax.set_mesh(mesh):
      compiled = (
        jax.jit(f)
        .lower(
          jax.device_put(replicated, NamedSharding(mesh, P())),
          *(jax.device_put(a, split) for a in batch),
        )
        .compile()
      )
    cost = compiled.cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)['flops']

  return per_device_flops(jax.devices()[:2]) / per_device_flops(jax.devices()[:1])
