"""``mimic_cxr_egd`` TFDS builder; importing this package registers it with TFDS."""

from data_builders.mimic_cxr_egd.mimic_cxr_egd_dataset_builder import EgdConfig
from data_builders.mimic_cxr_egd.mimic_cxr_egd_dataset_builder import MimicCxrEgd

__all__ = ['EgdConfig', 'MimicCxrEgd']
