"""The report's device line: a CPU engine's processor, a TensorRT engine's GPU."""

from stages.core.report_parts import device_line

# A CPU engine's manifest fingerprint, as env.json records it for ONNX Runtime on a 2-core Xeon.
CPU_FINGERPRINT = {
    "backend": "onnxruntime",
    "device": {
        "cpu": {
            "arch": "x86_64",
            "cores": 2,
            "isa": ["avx", "avx2", "avx512_vnni", "avx512f", "fma", "sse4_2"],
            "model": "Intel(R) Xeon(R) Processor",
        }
    },
    "providers": ["AzureExecutionProvider", "CPUExecutionProvider"],
    "version": "1.31.1",
}
# A TensorRT engine's (the shape TensorRTBackend.fingerprint() returns: cuda.device_facts() without the
# cuda-python runtime, the driver API's CUDA moved under "cuda").
TENSORRT_FINGERPRINT = {
    "backend": "tensorrt",
    "cuda": {"driver_api": "12.8", "tensorrt_build": "12"},
    "device": {"compute_capability": "8.6", "driver": "570.86.15", "gpu": "NVIDIA A10"},
    "version": "10.9.0.34",
}


def test_device_line_of_a_cpu_engine_names_the_processor():
    line = device_line(CPU_FINGERPRINT)
    assert line == "- device: Intel(R) Xeon(R) Processor (x86_64, 2 cores, ISA avx avx2 avx512_vnni avx512f fma sse4_2)"
    assert "?" not in line


def test_device_line_of_a_cpu_without_extensions_says_baseline():
    cpu = {"device": {"cpu": {"arch": "aarch64", "cores": 4, "isa": [], "model": "Neoverse-N1"}}}
    assert device_line(cpu) == "- device: Neoverse-N1 (aarch64, 4 cores, ISA baseline)"


def test_device_line_of_a_tensorrt_engine_names_the_gpu():
    line = device_line(TENSORRT_FINGERPRINT)
    assert (
        line == "- device: NVIDIA A10 (compute 8.6, driver 570.86.15 supporting CUDA 12.8, TensorRT built for CUDA 12)"
    )
    assert "?" not in line and "cores" not in line
