"""`edgeml sweep`: models x targets x recipes, each cell an `optimize` run, as Ray tasks (`edgeml[scale]`).

spec.py reads and checks SWEEP.yaml; schedule.py runs the cells as Ray tasks; cells.py runs one; slot.py lets one
cell at a time per node time its candidates; journal.py keeps finished cells for `--resume`; results.py writes
OUT/sweep.{json,md,html}.
"""
