# Generated from _async/__init__.py by scripts/unasync.py. Do not edit: edit that file.
"""Client implementation: ``_async`` is written by hand, ``_sync`` is generated from it."""
