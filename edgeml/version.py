"""edgeml's version, on the floor of the layers: the run record, the build cache's keys and `edgeml doctor` read it
below the package's own `edgeml.__version__`."""

__version__ = "0.1.0"
