"""The host's device nodes: symlink-safe file operations, node repair, ``sync`` and ``list``."""
