"""The AASIST models, weights, ONNX export and runtime, training (``spoofwatch.model``)."""

# This folder is importable only as spoofwatch.model (spoofwatch/model is a link to
# it). Imported as a top-level package it would be a second copy of every
# module, with its own classes and exceptions.
if __name__ != "spoofwatch.model":
    raise ImportError(f"import spoofwatch.model, not {__name__}")
