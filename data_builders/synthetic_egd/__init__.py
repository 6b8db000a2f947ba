"""Synthetic look-alike of the PhysioNet EGD + MIMIC-CXR-JPG trees."""
