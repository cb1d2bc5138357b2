"""cli/options.py's argparse types: the value, or one line naming the bad text and the bound."""

import argparse

import pytest

from deformable_detr.cli.options import non_negative_int, positive_int


def test_integer_types_take_their_bound_and_refuse_below_it_in_one_line():
    assert (positive_int("1"), non_negative_int("0"), positive_int("12")) == (1, 0, 12)
    for parse, text, message in [
        (positive_int, "0", "0 must be >= 1"),
        (non_negative_int, "-1", "-1 must be >= 0"),
        (positive_int, "two", "'two' is not an integer"),
        (non_negative_int, "1.5", "'1.5' is not an integer"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=f"^{message}$"):
            parse(text)
