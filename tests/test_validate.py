"""lsakit.validate: one check per kind of scalar argument, each raising ArgumentError."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from lsakit import validate
from lsakit.errors import ArgumentError, ConfigError
from lsakit.perturb.registry import build
from lsakit.train.objectives import build_objective


def test_positive_and_nonnegative_ints() -> None:
    assert validate.positive_int(3, "steps") == 3
    assert validate.nonnegative_int(0, "seed") == 0
    for bad in (0, -1, 1.0, 2.5, True, "3", None):
        with pytest.raises(ArgumentError, match=r"^steps must be an integer ≥ 1, got "):
            validate.positive_int(bad, "steps")
    with pytest.raises(ArgumentError, match=r"^seed must be an integer ≥ 0, got -1$"):
        validate.nonnegative_int(-1, "seed")
    with pytest.raises(ArgumentError, match=r"^seed must be an integer ≥ 0, got False$"):
        validate.nonnegative_int(False, "seed")


def test_the_message_names_the_argument_as_a_field() -> None:
    with pytest.raises(ArgumentError) as info:
        validate.positive_int(0, "batch_size")
    err = info.value
    assert isinstance(err, ConfigError) and isinstance(err, ValueError)
    assert err.template == "{batch_size} must be an integer ≥ 1, got 0"
    assert err.names == ("batch_size",)
    assert (
        err.render(lambda n: "--" + n.replace("_", "-"))
        == "--batch-size must be an integer ≥ 1, got 0"
    )


def test_prefix_and_suffix_surround_the_name() -> None:
    with pytest.raises(ArgumentError) as info:
        validate.positive_int(0, "depth", prefix=validate.MODEL_ARGUMENT)
    assert str(info.value) == "model argument depth must be an integer ≥ 1, got 0"
    assert info.value.names == ("depth",)
    with pytest.raises(ArgumentError, match=r"^gamma of layer L1 must be a finite number ≥ 0"):
        validate.number(-1.0, "gamma", low=0.0, suffix=" of layer L1")


@pytest.mark.parametrize(
    ("value", "kw", "message"),
    [
        (True, {}, "x must be a number, got True"),
        ("1", {}, "x must be a number, got '1'"),
        (math.nan, {}, "x must be a finite number ≥ -inf, got nan"),
        (-0.5, {"low": 0.0}, "x must be a finite number ≥ 0, got -0.5"),
        (0.0, {"low": 0.0, "strict": True}, "x must be a finite number > 0, got 0.0"),
    ],
)
def test_number(value: Any, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ArgumentError) as info:
        validate.number(value, "x", **kw)
    assert str(info.value) == message


def test_number_returns_a_float() -> None:
    value = validate.number(2, "x", low=2.0)
    assert value == 2.0 and isinstance(value, float)


def test_open_unit_and_fraction() -> None:
    assert validate.open_unit(0.5, "eta") == 0.5
    for bad in (0.0, 1.0):
        with pytest.raises(ArgumentError, match="eta must lie strictly between 0 and 1"):
            validate.open_unit(bad, "eta")
    assert validate.fraction(0, "dropout") == 0.0
    with pytest.raises(ArgumentError, match=r"^dropout must lie in \[0, 1\), got 1\.0$"):
        validate.fraction(1.0, "dropout")
    with pytest.raises(ArgumentError, match=r"^dropout must be a number in \[0, 1\), got None$"):
        validate.fraction(None, "dropout")


def test_choice_and_spatial() -> None:
    assert validate.choice("a", "mode", ("a", "b")) == "a"
    with pytest.raises(ArgumentError, match=r"^mode must be one of a, b, got 'c'$"):
        validate.choice("c", "mode", ("a", "b"))
    assert validate.spatial([4, 5], "size") == (4, 5)
    with pytest.raises(ArgumentError, match=r"^size must be \(height, width\), got \[4\]$"):
        validate.spatial([4], "size")
    with pytest.raises(ArgumentError) as info:
        validate.spatial((4, 0), "size")
    assert str(info.value) == "size[1] must be an integer ≥ 1, got 0"
    assert info.value.names == ("size",)


def test_builders_keep_their_prefix_and_the_argument_field() -> None:
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ArgumentError) as info:
        build("pgd", model=model, strength=0.1, steps=0)
    assert str(info.value) == "pgd: steps must be an integer ≥ 1, got 0"
    assert info.value.names == ("steps",)
    with pytest.raises(ArgumentError) as info:
        build_objective("trades", steps=0)
    assert str(info.value) == "objective 'trades': steps must be an integer ≥ 1, got 0"
