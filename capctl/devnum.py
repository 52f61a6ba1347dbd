"""Linux ``dev_t`` limits: the one definition of the largest major and minor number.

``include/linux/kdev_t.h``: ``MINORBITS`` is 20, and a major has the 12 bits above it.
"""

MAX_MAJOR = (1 << 12) - 1
MAX_MINOR = (1 << 20) - 1
