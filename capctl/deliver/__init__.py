"""Deliveries: each takes the same edits to a container another way (the OCI hook today)."""
