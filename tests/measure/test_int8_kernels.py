"""The INT8 scheme edgeml picks against what the CPU's INT8 kernels really compute (tests/int8_kernels.py)."""

import pytest
from int8_kernels import int8_saturates

from edgeml.measure import cpu_features


@pytest.mark.kernels
def test_the_int8_scheme_avoids_saturation_exactly_where_the_kernels_saturate():
    # Under `make test-avx2` the kernels run on an emulated Haswell and $EDGEML_CPU_FEATURES names its flags:
    # this also fails when the emulation does not reach the kernels, or the flags do not match it.
    scheme = cpu_features.int8_scheme()
    assert int8_saturates() == scheme.avoid_saturation, scheme.reason
