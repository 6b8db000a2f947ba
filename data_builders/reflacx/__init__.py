"""``reflacx`` TFDS builder (PhysioNet ``reflacx-xray-localization`` 1.0.0) and readers of its
format; importing this package registers the builder with TFDS."""

from data_builders.reflacx.reflacx_dataset_builder import Reflacx
from data_builders.reflacx.reflacx_dataset_builder import ReflacxConfig

__all__ = ['Reflacx', 'ReflacxConfig']
