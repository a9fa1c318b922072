"""The bundle: writing it (manifest, reference vectors, run.py), packing, verifying, shipping, profiling it on
the device, and building a TensorRT engine there."""
