"""The one positive-number check behind mlpot's settings errors."""

from __future__ import annotations

import math

import pytest

from mlpot.md.integrators import LangevinBAOAB
from mlpot.validation import optional_positive_number, positive_number


@pytest.mark.parametrize("value", [0, -1.5, math.nan, math.inf, True, "2", None])
def test_anything_but_a_finite_positive_number_is_refused_by_name_and_unit(value):
    with pytest.raises(ValueError, match=r"^bin_width_A must be a positive number of Å, got "):
        positive_number("bin_width_A", value, "Å")


def test_positive_numbers_come_back_as_floats_and_none_is_allowed_where_optional():
    assert positive_number("x", 3) == 3.0 and isinstance(positive_number("x", 3), float)
    assert optional_positive_number("contact_A", None) is None
    with pytest.raises(ValueError, match=r"contact_A must be a positive number of Å or null, got -0.1"):
        optional_positive_number("contact_A", -0.1, "Å", none="null")


def test_an_integrator_names_its_bad_setting():
    with pytest.raises(ValueError, match="must be a positive number, got nan"):
        LangevinBAOAB(timestep_fs=math.nan, temperature_K=300.0)
