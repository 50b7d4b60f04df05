"""The ``register_data_components`` hook: a plugin's component is found by name; clashes fail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import olivine
from olivine.config.sections import DataConfig
from olivine.data import DataContainerSpec, resolve
from olivine.errors import PluginError
from olivine.plugins import get_plugin_host


class Squares:
    """A plugin: a dataset of squares and a container that uses it."""

    @olivine.hookimpl
    def register_data_components(self, register: Any) -> None:
        register("load_dataset", lambda count=3: [({"x": [float(i * i)]}, i) for i in range(count)],
                 "squares")
        register("data_container", DataContainerSpec("SquaresContainer", {"load_dataset": "squares"}))


class Clash:
    """A plugin that registers a name another plugin (or olivine) provides."""

    def __init__(self, name: str) -> None:
        self.name = name

    @olivine.hookimpl
    def register_data_components(self, register: Any) -> None:
        register("load_dataset", lambda: [], self.name)


@pytest.fixture(autouse=True)
def _fresh_host() -> Iterator[None]:
    yield
    get_plugin_host(fresh=True)  # the installed plugins' components only, again


def test_hook_register_data_components() -> None:
    host = get_plugin_host(extra=[Squares()])
    assert ("data_container", "squarescontainer") in host.data_components
    resolved = resolve(DataConfig(name="sq", type="squarescontainer",
                                  load_dataset_config={"count": 4}))
    batches = list(resolved.create_dataloader())
    assert len(batches) == 4 and float(batches[3][0]["x"][0][0]) == 9.0


@pytest.mark.parametrize(("plugins", "message"), [
    ([Clash("dummy_dataset")], "registered the data load_dataset 'dummy_dataset', which olivine "
                               "itself provides"),
    ([Squares(), Clash("squares")], "data load_dataset 'squares' is registered twice"),
])
def test_a_clash_names_both(plugins: list[object], message: str) -> None:
    with pytest.raises(PluginError, match=message):
        get_plugin_host(extra=plugins)
