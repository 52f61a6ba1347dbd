"""Deliveries: each takes the same Edits into a container its own way: the OCI hook, the runtime
wrapper's spec rewrite, and a CDI spec."""
