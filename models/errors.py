"""The one small exception tree shared by every process kind.

``SERError`` is the root; catch it at a CLI boundary and turn it into a one-line message.
"""

from __future__ import annotations


class SERError(Exception):
    """Base class of every error this project raises on purpose."""


class AudioError(SERError):
    """Audio that cannot be decoded, or decodes to something the model cannot use."""


class BundleError(SERError):
    """A model bundle (``model.onnx`` + ``spec.json``) that is missing, corrupt or inconsistent."""


class ParameterError(SERError, ValueError):
    """A numerical parameter outside its documented range (names the bad value)."""
