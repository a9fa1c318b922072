"""`optimize` and the steps it runs: the recipe, the PyTorch passes, candidate builds (cached), the accuracy-budget
search and selection; single passes and benchmarks over several targets."""
