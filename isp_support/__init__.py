"""Support package for the unpaired ISP notebook series."""
__version__ = "0.1.0"
