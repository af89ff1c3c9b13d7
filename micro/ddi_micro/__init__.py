"""The small package behind micro/'s two commands: ``gen`` (C sources of an export for TensorFlow Lite Micro)
and ``verify`` (the export under real TFLM kernels, driven by the C decision core)."""
