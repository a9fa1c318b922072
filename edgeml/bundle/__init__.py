"""The bundle format: writing it (manifest, reference vectors, run.py: the standalone runner), opening and checking
one (folder.Bundle, which verify and edgeml.deploy take), its drift statistics (monitoring.py), verifying and
packing it. Taking it to devices is edgeml.deploy."""
