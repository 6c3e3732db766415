"""ONNX Runtime: an offline-optimized model plus the session settings it runs with; the accuracy reference too.

The package is the backend: ``BACKEND`` registers it (``stages.runtime.registry``), and its files are the code its
engines depend on (the env stage records their digest in each candidate's entry of env.json).
"""

from stages.backends.onnxruntime.backend import OnnxRuntimeBackend as BACKEND

__all__ = ["BACKEND"]
