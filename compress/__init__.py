"""Compression passes. Each pass is a module with a config dataclass and a `run` function;
what it supports is declared next to it as `SUPPORTS`."""
