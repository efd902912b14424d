"""Shipped configuration files (TOML), read with :mod:`importlib.resources`."""
