"""Compatibility layers for code written against other libraries.

``tangentflow.compat.neural_tangents`` replaces ``neural_tangents.predict`` (0.6.x): change
``from neural_tangents import predict`` to
``from tangentflow.compat import neural_tangents as predict``.
"""

from . import neural_tangents

__all__ = ["neural_tangents"]
