"""The one registry mechanism (lsakit.registry) and the four registries built on it."""

from __future__ import annotations

import pytest

from lsakit import data, models, perturb
from lsakit.errors import ConfigError
from lsakit.registry import Registry
from lsakit.train.objectives import build_objective


def test_an_unknown_name_gets_the_closest_and_every_known_one() -> None:
    shapes: Registry[int] = Registry(
        "shape", {"circle": 1, "square": 4}, alternatives="any polygon"
    )
    assert shapes.get("square") == 4 and shapes.names() == ["circle", "square"]
    with pytest.raises(ConfigError) as caught:
        shapes.get("sqare")
    assert str(caught.value) == (
        "unknown shape 'sqare'; did you mean 'square'? known shapes: circle, square — or any polygon"
    )
    with pytest.raises(
        ConfigError, match=r"^unknown shape 'hexagon'; known shapes: circle, square"
    ):
        shapes.get("hexagon")
    with pytest.raises(ConfigError, match="shape name must be a string, got 3"):
        shapes.get(3)
    with pytest.raises(ConfigError, match="'circle' is registered already"):
        shapes.add("circle", 0)


def test_a_registry_may_normalize_names() -> None:
    sets: Registry[str] = Registry(
        "data set", {"fashion-mnist": "f"}, key=lambda n: n.lower().replace("_", "-")
    )
    assert sets.get("Fashion_MNIST") == "f" and "FASHION-mnist" in sets


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: models.build("model_c"),
            "unknown model 'model_c'; did you mean 'model_b'? known models: model_a",
        ),
        (
            lambda: data.info("mnits"),
            "unknown data set 'mnits'; did you mean 'mnist'? known data sets: moons",
        ),
        (
            lambda: perturb.build("pdg", strength=0.1),
            "unknown perturbation 'pdg'; did you mean 'pgd'? known perturbations: gaussian",
        ),
        (
            lambda: build_objective("trade"),
            "unknown training objective 'trade'; did you mean 'trades'? known training objectives: standard",
        ),
    ],
)
def test_the_four_registries_refuse_alike(call: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        call()  # type: ignore[operator]
    assert str(caught.value).startswith(message)
