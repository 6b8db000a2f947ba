"""Reference outputs of the PyTorch models, run with .venv-torch's Python (not by pytest).

  .venv-torch/bin/python tests/torch_reference.py ARCH OUT_DIR

Builds torchvision ``resnet18``/``resnet50``/``densenet121`` or timm ``efficientnet_b0`` with random
weights (seed 0) and random BatchNorm statistics and affine parameters (so that carrying them
over is tested), in eval mode, and writes to OUT_DIR: ``weights.safetensors`` and
``weights.pth`` (the state dict), ``input.npy`` (2 x 3 x 64 x 64), ``logits.npy`` and
``features.npy`` (the last feature map, N x C x H x W).
"""

import pathlib
import sys

import numpy as np
import safetensors.torch
import torch


def build(arch: str) -> torch.nn.Module:
  if arch == 'efficientnet_b0':
    import timm

    return timm.create_model('efficientnet_b0', pretrained=False)
  import torchvision

  return getattr(torchvision.models, arch)(weights=None)


def features(model: torch.nn.Module, arch: str, x: torch.Tensor) -> torch.Tensor:
  if arch == 'efficientnet_b0':
    return model.forward_features(x)
  if arch == 'densenet121':
    return torch.nn.functional.relu(model.features(x))
  m = model
  x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
  return m.layer4(m.layer3(m.layer2(m.layer1(x))))


def main(arch: str, out: pathlib.Path) -> None:
  torch.manual_seed(0)
  model = build(arch)
  with torch.no_grad():
    for mod in model.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.running_mean.normal_(0.0, 0.2)
        mod.running_var.uniform_(0.5, 2.0)
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.normal_(0.0, 0.2)
  model.eval()
  x = torch.randn(2, 3, 64, 64)
  with torch.no_grad():
    logits = model(x)
    fmap = features(model, arch, x)
  out.mkdir(parents=True, exist_ok=True)
  sd = {k: v.contiguous() for k, v in model.state_dict().items()}
  safetensors.torch.save_file(sd, str(out / 'weights.safetensors'))
  torch.save(sd, out / 'weights.pth')
  np.save(out / 'input.npy', x.numpy())
  np.save(out / 'logits.npy', logits.numpy())
  np.save(out / 'features.npy', fmap.numpy())


if __name__ == '__main__':
  main(sys.argv[1], pathlib.Path(sys.argv[2]))
