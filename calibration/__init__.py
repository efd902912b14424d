"""Protocols, set scoring, metrics, threshold fit and reports (``spoofwatch.calibration``)."""

# This folder is importable only as spoofwatch.calibration (spoofwatch/calibration is a link to
# it). Imported as a top-level package it would be a second copy of every
# module, with its own classes and exceptions.
if __name__ != "spoofwatch.calibration":
    raise ImportError(f"import spoofwatch.calibration, not {__name__}")
