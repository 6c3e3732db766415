"""TensorRT: a strongly typed plan built with Polygraphy's loaders (NVIDIA GPUs; imported only where it runs).

The package is the backend: ``BACKEND`` registers it (``stages.runtime.registry``), and its files are the code its
engines depend on (the env stage records their digest in each candidate's entry of env.json).
"""

from stages.backends.tensorrt.backend import TensorRTBackend as BACKEND

__all__ = ["BACKEND"]
