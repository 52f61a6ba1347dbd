"""``capctl watch``: keep nodes, grants and specs in step with the driver as it changes."""
