"""The bundle: writing it (manifest, reference vectors, run.py), opening and checking one (folder.Bundle, which
verify, ship, profile and build-engine take), packing, verifying, shipping, profiling it on the device, and
building a TensorRT engine there."""
