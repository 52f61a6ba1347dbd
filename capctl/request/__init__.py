"""Requests: what a container asks for (``NVIDIA_VISIBLE_DEVICES``, its OCI config), the MIG
topology (snapshot or NVML), and resolving one against the other into a plan.
"""
