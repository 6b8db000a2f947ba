r"""vmap vs unrolled sub-models for the mimic adversarial step, side by side.

  python benchmarks/ensemble_execution.py [--steps 5]

Times the jit-compiled `mimic` member step (3 tiny ResNets, GradientSHAP with 2 samples,
64 px, batch 32; the synthetic config) and the plain `single` step with
``config.ensemble.execution`` = vmap and unrolled, on the default backend.
"""

import functools
import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import mimic
from mimic_jax import models
from mimic_jax import steps

_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps after compilation.')


def _time(config, batch):
  model = models.create_model(config.model)
  state = jax.jit(functools.partial(steps.create_state, config, model, (64, 64, 1)))(
      jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(steps.member_step, config))
  t0 = time.perf_counter()
  state, _ = step(state, batch)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state, _ = step(state, batch)
  jax.block_until_ready(state)
  return compile_s, (time.perf_counter() - t0) / _STEPS.value


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.normal(size=(32, 64, 64, 1)), jnp.float32),
           'label': jnp.asarray(np.arange(32) % 3, jnp.int32),
           'gaze': jnp.full((32, 64, 64), 1 / 4096, jnp.float32)}
  out = {'backend': jax.default_backend(), 'device': str(jax.devices()[0])}
  for method in ('single', 'mimic'):
    for execution in ('vmap', 'unrolled'):
      c = mimic.get_config(f'{"baseline" if method == "single" else "mimic"},synthetic')
      c.ensemble.execution = execution
      compile_s, step_s = _time(c, batch)
      out[f'{method}/{execution}'] = {'compile_s': round(compile_s, 2),
                                      'step_s': round(step_s, 4)}
      print(method, execution, out[f'{method}/{execution}'], flush=True)
  out['mimic vmap / unrolled'] = round(out['mimic/vmap']['step_s'] /
                                       out['mimic/unrolled']['step_s'], 2)
  print(json.dumps(out, indent=1))


if __name__ == '__main__':
  app.run(main)
