"""Device profiles: YAML files describing a device's compute, memory and runtimes."""
