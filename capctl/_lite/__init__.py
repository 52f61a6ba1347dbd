"""Start-up machinery for the hook's path: records, enums and JSON without their stdlib cost.

The hook runs on every container start; ``dataclasses``, ``enum`` and ``json`` cost it several
milliseconds of imports (``docs/hook-startup.md``).  Only modules on the hook's path use these;
everything else uses the standard library.
"""
