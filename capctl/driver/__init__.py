"""The driver's files: capability names, the ``*-minors``, capability and ``/proc/devices``
parsers (pure), and reading them under a host root (:mod:`capctl.driver.procfs`).

Facts relied on: ``docs/driver.md``.
"""
