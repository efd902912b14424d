"""Shipped configuration files (TOML), read with :mod:`importlib.resources`."""

# This folder is importable only as spoofwatch.configs (spoofwatch/configs is a link to
# it). Imported as a top-level package it would be a second copy of every
# module, with its own classes and exceptions.
if __name__ != "spoofwatch.configs":
    raise ImportError(f"import spoofwatch.configs, not {__name__}")
