"""capctl: who may touch which NVIDIA MIG capability on a Linux host."""

__version__ = "0.1.0"
