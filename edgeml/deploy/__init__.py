"""Deployment: a bundle taken to its devices. Shipping it (ship.py), profiling it there (on_device.py, `edgeml
profile`), building its TensorRT engine there (build_engine.py), and `edgeml rollout` over a fleet: fleet.py (the
fleet file), releases.py (a device's releases), device_timing.py (the timing run on the device), rollout.py."""
