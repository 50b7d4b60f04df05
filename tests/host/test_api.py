"""The declared plugin API: what ``olivine`` exports, the option helper, the surface check."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import attrs
import pytest

import olivine

REPO = Path(__file__).resolve().parents[2]


def _checker() -> Any:
    spec = importlib.util.spec_from_file_location("check_api", REPO / "scripts" / "check_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_exported_name_resolves_and_public_modules_declare_all() -> None:
    for name in olivine.__all__:
        value = getattr(olivine, name)
        if isinstance(value, type) or inspect.isfunction(value):
            assert (getattr(value, "__doc__", None) or "").strip(), f"olivine.{name} has no docstring"
    for module in olivine.PUBLIC_MODULES:
        mod = importlib.import_module(module)
        assert mod.__all__, module
        for name in mod.__all__:
            getattr(mod, name)
    assert olivine.API_VERSION == olivine.__api_version__ == "1.4"
    with pytest.raises(AttributeError, match="no attribute 'Engine'"):
        olivine.Engine  # noqa: B018  (private: not part of the API)


def test_import_olivine_and_its_names_stays_light() -> None:
    code = ("import sys, olivine; olivine.Pass; olivine.option; olivine.System; olivine.run; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'transformers', 'onnx', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_plugins_of_this_repository_use_only_the_api_and_the_host_has_no_cycles() -> None:
    checker = _checker()
    assert checker.check_plugins() == []
    assert checker.check_host() == []


def test_the_surface_check_reports_private_imports(tmp_path: Path) -> None:
    bad = tmp_path / "plugin.py"
    bad.write_text(textwrap.dedent("""
        import olivine
        from olivine import Pass, option
        from olivine.engine import Engine
        from olivine.models import _external_data_files
        from olivine.data import read_rows, _secret
        from olivine_other._export import helper
        from olivine_other.public import _hidden
        from olivine_mine._private import fine
        olivine.hookimpl
        olivine.get_engine
    """))
    problems = _checker().check_plugins([("olivine_mine", bad)])
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert "from olivine.engine import ...: not a public olivine module" in text
    assert "from olivine.models import ...: not a public olivine module" in text
    assert "from olivine.data import _secret: not in olivine.data.__all__" in text
    assert "from olivine_other._export import helper: private to plugin olivine_other" in text
    assert "from olivine_other.public import _hidden: private to plugin olivine_other" in text
    assert "olivine.get_engine: not in olivine.__all__" in text


def test_the_cycle_finder_finds_a_cycle() -> None:
    checker = _checker()
    assert checker.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert checker.cycles({"a": {"b"}, "b": set()}) == []


def test_option_gives_typed_metadata_that_the_host_reads() -> None:
    @attrs.frozen
    class Config:
        alpha: float = attrs.field(default=0.5, metadata=olivine.option(
            help="smoothing", search=[0.25, 0.5], aliases=("smooth",)))
        data: str | None = attrs.field(default=None, metadata=olivine.option(
            help="calibration data", data_config=True))
        files: dict[str, str] = attrs.field(factory=dict, metadata=olivine.option(
            input_path=["weights"]))
        old: int = attrs.field(default=1, metadata={"help": "API 1.0 form", "search": (1, 2)})

    fields = attrs.fields_dict(Config)
    info = olivine.option_info(fields["alpha"])
    assert info == olivine.OptionInfo(help="smoothing", search=(0.25, 0.5), aliases=("smooth",))
    assert olivine.option_info(fields["data"]).data_config is True
    assert olivine.option_info(fields["files"]).input_path == ("weights",)
    assert olivine.option_info(fields["old"]) == olivine.OptionInfo("API 1.0 form", (1, 2))
    # the readers of API 1.0's string keys see the same values
    assert fields["alpha"].metadata["search"] == [0.25, 0.5]
    assert fields["alpha"].metadata["aliases"] == ("smooth",)
    assert fields["data"].metadata["data_config"] is True
    from olivine.options import legacy_fields

    assert legacy_fields(Config) == ["old"]
    with pytest.raises(TypeError, match="sequence of names"):
        olivine.option(aliases="smooth")  # type: ignore[arg-type]


def test_an_option_alias_is_accepted_and_an_unknown_key_is_not() -> None:
    from olivine.config import Problems, structure

    @attrs.frozen
    class Config:
        level: int = attrs.field(default=1, metadata=olivine.option(help="x", aliases=("lvl",)))

    problems = Problems()
    assert structure({"lvl": 3}, Config, "passes.p", problems) == Config(3)
    assert problems.items == []
    structure({"levle": 3}, Config, "passes.p", problems)
    assert problems.items and problems.items[0].startswith("passes.p.levle: unknown")


def test_a_plugin_with_api_1_0_option_dicts_loads_with_a_deprecation_warning() -> None:
    from olivine.plugins import get_plugin_host

    class Legacy(olivine.Pass):
        """A pass of API 1.0."""

        name = "LegacyOptions"

        @attrs.frozen
        class Config:
            alpha: int = attrs.field(default=1, metadata={"help": "old form"})

    plugin = type(sys)("legacy_plugin")

    @olivine.hookimpl
    def register_passes(register: Any) -> None:
        register(Legacy)

    plugin.register_passes = register_passes  # type: ignore[attr-defined]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        host = get_plugin_host(extra=[plugin])
    assert host.passes.get("LegacyOptions") is Legacy
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any("LegacyOptions" not in m and "Legacy.Config declares options with API 1.0's" in m
               and "use metadata=olivine.option(help=...)" in m for m in messages), messages


@pytest.mark.parametrize(("spec", "ok"), [(">=1,<2", True), (">=1.1,<2", True), (">=1.2", False),
                                          ("==1.1", True), ("<1", False), (">=2,<3", False),
                                          ("!=1.1", False), (">1.0", True)])
def test_api_ranges(spec: str, ok: bool) -> None:
    from olivine.plugins import api_supported

    assert api_supported(spec, "1.1") is ok


@pytest.mark.parametrize("spec", ["", "1", ">=one", "~=1.1", ">=1,"])
def test_malformed_api_ranges_are_value_errors(spec: str) -> None:
    from olivine.plugins import api_supported

    with pytest.raises(ValueError):
        api_supported(spec, "1.1")
