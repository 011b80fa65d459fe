"""Benchmarks of df.stt.transcribe against hand-written baselines: ``python -m benchmarks.run``."""

from __future__ import annotations
