"""Model zoo: ``create_model(config.model)``."""

import ml_collections

from mimic_jax.models import resnet

ARCHITECTURES = {
    'resnet18': resnet.ResNet18,
    'tiny_resnet': resnet.TinyResNet,
}


def create_model(model: ml_collections.ConfigDict):
  """Instantiates ``model.arch`` with ``num_classes`` and ``norm`` from the config."""
  if model.arch not in ARCHITECTURES:
    raise ValueError(f'config.model.arch={model.arch!r} is unknown; choose one of '
                     f'{sorted(ARCHITECTURES)}')
  kwargs = {'num_classes': model.num_classes, 'norm': model.norm}
  if model.get('width'):
    kwargs['width'] = model.width
  return ARCHITECTURES[model.arch](**kwargs)
