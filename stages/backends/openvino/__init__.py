"""OpenVINO: the precision stage's graph compiled for this CPU and exported as a blob.

The package is the backend: ``BACKEND`` registers it (``stages.runtime.registry``), and its files are the code its
engines depend on (the env stage records their digest in each candidate's entry of env.json).
"""

from stages.backends.openvino.backend import OpenVinoBackend as BACKEND

__all__ = ["BACKEND"]
