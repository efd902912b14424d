"""The live engine: Sans-I/O core, sources, server and client (``spoofwatch.stream``)."""

# This folder is importable only as spoofwatch.stream (spoofwatch/stream is a link to
# it). Imported as a top-level package it would be a second copy of every
# module, with its own classes and exceptions.
if __name__ != "spoofwatch.stream":
    raise ImportError(f"import spoofwatch.stream, not {__name__}")
