"""Synthetic REFLACX look-alike trees."""
