"""``lsakit models`` and ``lsakit datasets``: what is built in."""

from __future__ import annotations

from rich.table import Table

from lsakit.cli._app import app, out


@app.command("models")
def models_command() -> None:
    """List the models with their parameter counts."""
    from lsakit import models

    table = Table("name", "parameters", "input", "classes", "description", box=None)
    for name in models.names():
        info = models.info(name)
        params = models.count_parameters(models.build(name))
        shape = "×".join(str(s) for s in info.input_shape)
        table.add_row(name, f"{params:,}", shape, str(info.num_classes), info.description)
    out.print(table)


@app.command("datasets")
def datasets_command() -> None:
    """List the data sets."""
    from lsakit import data

    table = Table("name", "input", "classes", "default model", "description", box=None)
    for name in data.names():
        info = data.info(name)
        shape = "×".join(str(s) for s in info.input_shape)
        table.add_row(name, shape, str(info.num_classes), info.default_model, info.description)
    out.print(table)
