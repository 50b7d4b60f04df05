"""The flags of Olive's ``run`` beyond ``--config``: model flags, ``--tempdir``,
``--list_required_packages``, ``--package-config``, ``--disable_telemetry``.

* The model flags (``-m``, ``-t``, ``--trust_remote_code``, ``-a``, ``--model_script``,
  ``--script_dir``) replace the workflow's ``input_model``, as in Olive; ``--test`` runs the
  workflow on a randomly initialized 2-layer model of its Hugging Face input's architecture.
* ``--tempdir``: the folder temporary files go to during the run.
* ``--list_required_packages``: print the plugins (pip distributions) the workflow's passes
  come from, write them to ``olivine_requirements.txt`` beside the output, and run nothing.
* ``--package-config``: Olive's table of pass modules; olivine finds passes through installed
  plugins instead, so the flag is refused with that explanation.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from olivine.errors import UsageError

REQUIREMENTS_FILE = "olivine_requirements.txt"


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """Add Olive's other ``run`` flags to ``p`` (``-o/--output_path`` is already there)."""
    p.add_argument("--list_required_packages", "--list-required-packages",
                   dest="list_required_packages", action="store_true",
                   help="list the plugins the workflow's passes need and exit")
    p.add_argument("--tempdir", default=None, help="folder for temporary files of the run")
    p.add_argument("--package-config", "--package_config", dest="package_config", default=None,
                   help="Olive's pass-module table (olivine finds passes through plugins: refused)")
    group = p.add_argument_group("model options (replace the workflow's input_model)")
    group.add_argument("-m", "--model_name_or_path", default=None,
                       help="the input model (a Hugging Face folder or hub id, an .onnx file or "
                            "folder)")
    group.add_argument("-t", "--task", default=None, help="the Hugging Face task")
    group.add_argument("--trust_remote_code", action="store_true",
                       help="allow the model's own code from its repository")
    group.add_argument("--test", nargs="?", const=True, default=None, metavar="FOLDER",
                       help="run on a randomly initialized 2-layer model of the input's "
                            "architecture (kept in FOLDER)")
    group.add_argument("-a", "--adapter_path", default=None, help="a LoRA adapter folder")
    group.add_argument("--model_script", default=None, help="a PyTorch model script")
    group.add_argument("--script_dir", default=None, help="a folder the model script imports")


def _absolute(config: dict[str, Any]) -> dict[str, Any]:
    for key in ("model_path", "adapter_path", "model_script", "script_dir"):
        value = config.get(key)
        if isinstance(value, str) and Path(value).expanduser().exists():
            config[key] = str(Path(value).expanduser().resolve())
    return config


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The top-level keys the flags replace (``input_model``); checks ``--package-config``."""
    if args.package_config:
        raise UsageError("--package-config: olivine finds passes through installed plugins (pip "
                         "install the plugin that registers the pass; see `olivine plugins`), "
                         "not through Olive's package config")
    overrides: dict[str, Any] = {}
    if args.model_name_or_path or args.model_script:
        from olivine.cli.inputs import input_model_config

        overrides["input_model"] = _absolute(input_model_config(args))
    if args.test not in (None, False):
        overrides["input_model"] = _test_input(args, overrides.get("input_model"))
    return overrides


def _test_input(args: argparse.Namespace, given: dict[str, Any] | None) -> dict[str, Any]:
    from olivine.cli.generated import cache_dir
    from olivine.cli.testmodel import build_test_model, test_model_folder
    from olivine.config.loader import load_document

    model = given
    base = Path.cwd()
    if model is None:
        raw = load_document(args.config)
        model = dict(raw.get("input_model") or {}) if isinstance(raw, dict) else {}
        base = Path(args.config).resolve().parent
    if str(model.get("type", "")).lower() != "hfmodel" or not model.get("model_path"):
        raise UsageError("--test: needs a Hugging Face input_model (HfModel with model_path) in "
                         "the workflow or on the command line")
    source = str(model["model_path"])
    local = (base / source).expanduser()
    if local.exists():
        source = str(local.resolve())
    load = dict(model.get("load_kwargs") or {})
    remote = bool(load.get("trust_remote_code") or model.get("trust_remote_code"))
    folder = test_model_folder(args.test, cache_dir(args.cache_dir), source)
    model = {**model, "model_path": str(build_test_model(source, folder, model.get("task"),
                                                         trust_remote_code=remote))}
    return model


@contextlib.contextmanager
def use_tempdir(path: str | None) -> Iterator[None]:
    """Send the run's temporary files to ``path`` (created when missing), then restore the old.

    ``TMPDIR`` and :data:`tempfile.tempdir` are process-wide: a run called in-process (tests,
    ``olivine.testing.cli_main``) must not leave them pointing at its folder.
    """
    if not path:
        yield
        return
    folder = Path(path).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--tempdir {path!r}: {exc.strerror or exc}") from None
    old_env, old_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env
        tempfile.tempdir = old_dir


def list_required_packages(engine: Any, output_dir: str) -> int:
    """Print (and write) the plugin distributions the workflow's steps come from."""
    from olivine.plugins import get_plugin_host

    rows = {row["name"]: row for row in get_plugin_host().describe()}
    needed: dict[str, list[str]] = {}
    for step in engine.plan():
        row = rows.get(step.plugin, {})
        dist = str(row.get("distribution") or step.plugin)
        needed.setdefault(dist, []).append(step.pass_name)
    for dist, passes in sorted(needed.items()):
        print(f"{dist}  ({', '.join(sorted(set(passes)))})")
    target = Path(output_dir).expanduser().resolve().parent / REQUIREMENTS_FILE
    target.write_text("".join(f"{d}\n" for d in sorted(needed)), encoding="utf-8")
    print(f"Required packages listed! ({target})")
    return 0
