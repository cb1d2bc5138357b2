"""Fixtures for the operator tests; the helpers themselves live in op_oracles.py."""

import pytest
from op_oracles import levels, random_inputs


@pytest.fixture
def make_inputs():
    """`random_inputs` as a fixture."""
    return random_inputs


@pytest.fixture
def make_levels():
    """`levels` as a fixture."""
    return levels
