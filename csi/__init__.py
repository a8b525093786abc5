"""localvol: a CSI driver for node-local directory and loop-device volumes."""

__version__ = "0.1.0"
