"""REFLACX (PhysioNet ``reflacx-xray-localization`` 1.0.0): readers of its format."""
