"""The contract between training and serving: audio, segments, features, bundle, runtime.

Import the submodules directly (``models.audio``, ``models.features``, ``models.bundle``,
``models.runtime``); this package deliberately imports nothing heavy on its own.
"""
