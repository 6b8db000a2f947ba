"""Differentiable, batched explainers of a classifier, and the post-processing of their maps.

- Attribution explainers (``ATTRIBUTION_EXPLAINERS``): gradients of the target class's logit
  at the input, ``(B, H, W, C)`` maps (``attribution.py``); ``postprocessing.py``..
- :func:`grad_cam`: Grad-CAM at a named feature map of a ``mimic_jax.models`` model.
- :func:`postprocess`: sign, channel reduction, pooling and normalisation of a map.

Everything here is differentiable with respect to the model's parameters, so a loss of an
explanation trains by double backprop.
"""

from mimic_jax.explainers.attribution import ATTRIBUTION_EXPLAINERS
from mimic_jax.explainers.attribution import gradient_shap
from mimic_jax.explainers.attribution import gradient_x_input
from mimic_jax.explainers.attribution import input_gradients
from mimic_jax.explainers.attribution import integrated_gradients
from mimic_jax.explainers.attribution import smoothgrad
from mimic_jax.explainers.grad_cam import grad_cam
from mimic_jax.explainers.postprocessing import postprocess

__all__ = [
  'ATTRIBUTION_EXPLAINERS',
  'grad_cam',
  'gradient_shap',
  'gradient_x_input',
  'input_gradients',
  'integrated_gradients',
  'postprocess',
  'smoothgrad',
]
