"""Measuring: quality and its uncertainty, latency (single runs and paired rounds), memory, the roofline
prediction, the machine, and the CPU features the rest depends on."""
