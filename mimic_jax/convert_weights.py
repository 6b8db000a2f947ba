r"""Converts a PyTorch ImageNet checkpoint to our Flax variables (safetensors).

  python -m mimic_jax.convert_weights IN OUT [--arch=densenet121|resnet18|resnet50|...]

``IN``: a torchvision ``resnet18``/``resnet50``/``densenet121`` or timm ``efficientnet_b0``
state dict (``.safetensors``; ``.pth``/``.pt`` if PyTorch is installed). ``OUT``: a
``.safetensors`` file for ``config.model.pretrained``. The architecture is recognised from the
tensor names unless given. The architecture must match exactly: it fails naming a tensor that
is missing, has another shape, or is not part of the architecture (a deeper variant's extra
layers).
"""

from __future__ import annotations

from collections.abc import Sequence
import sys

from absl import app
from absl import flags

from mimic_jax.models import pretrained

_ARCH = flags.DEFINE_enum(
  'arch', None, list(pretrained.ARCHES), 'Architecture (default: recognised from the tensor names).'
)


def guess_arch(names: Sequence[str] | None) -> str:
  """The architecture whose characteristic tensor names the checkpoint has."""
  names = set(names)
  if 'features.denseblock1.denselayer1.conv1.weight' in names:
    return 'densenet121'
  if 'blocks.0.0.conv_dw.weight' in names:
    return 'efficientnet_b0'
  if 'layer1.0.conv1.weight' in names:
    if 'layer1.0.conv3.weight' in names:
      if 'layer3.6.conv1.weight' in names or 'layer3.5.conv1.weight' not in names:
        raise pretrained.ConversionError(
          'a bottleneck ResNet other than resnet50 (deeper or '
          'shallower); supported: resnet18, resnet50'
        )
      return 'resnet50'
    return 'resnet18'
  raise pretrained.ConversionError(
    f'cannot tell the architecture from the tensor names (first: {sorted(names)[:3]}); '
    f'pass --arch, one of {pretrained.ARCHES}'
  )


def main(argv: Sequence[str]) -> None:
  if len(argv) != 3:
    raise app.UsageError('usage: python -m mimic_jax.convert_weights IN OUT [--arch=...]')
  src, dst = argv[1], argv[2]
  if not dst.endswith('.safetensors'):
    raise app.UsageError(f'OUT must end in .safetensors, not {dst!r}')
  try:
    sd = pretrained.read_state_dict(src)
    arch = _ARCH.value or guess_arch(sd)
    variables = pretrained.convert(sd, arch)
    pretrained.check_against_model(variables, arch)
  except (pretrained.ConversionError, FileNotFoundError, ImportError, ValueError) as e:
    sys.exit(f'convert_weights: {src}: {e}')
  pretrained.save_converted(variables, arch, dst)
  leaves = [v for c in variables.values() for v in _leaves(c)]
  print(f'{arch}: {len(leaves)} tensors, {sum(v.size for v in leaves):,} values -> {dst}')


def _leaves(tree: dict):
  for v in tree.values():
    if isinstance(v, dict):
      yield from _leaves(v)
    else:
      yield v


if __name__ == '__main__':
  app.run(main)
