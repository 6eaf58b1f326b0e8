"""The ``sharp-rt`` command line (entry point ``sharp_rt.cli:main``); see :mod:`sharp_rt.cli.app`."""

from __future__ import annotations

from sharp_rt.cli.app import app, main

__all__ = ["app", "main"]
