"""Importing this module imports onnxruntime-genai's model builder the way a build does.

It is the ``ModelBuilder`` pass's ``preload``: a step's child process started ahead of its
request (or a prefetch thread) imports it while the inputs are hashed, so the builder's
seconds of imports (torch, transformers, onnx_ir) overlap that work. A builder that cannot
be imported is left for the build to report.
"""

from __future__ import annotations

import contextlib

from olivine import OlivineError
from olivine_modelbuilder.build import _import_builder

with contextlib.suppress(OlivineError):
    _import_builder()
