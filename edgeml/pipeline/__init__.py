"""`optimize` and the steps it runs: torch passes, candidate builds (cached), the accuracy-budget search and
selection; single passes and multi-target benchmarks."""
