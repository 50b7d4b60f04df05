"""``olivine run-pass``: one pass on one model (Olive's ``run-pass``), on the engine of ``run``.

``--pass-name`` names the pass (any installed plugin's, Olive's names and olivine's aliases),
``--pass-config`` a JSON object of its options, ``--list-passes`` lists them. The model flags
are Olive's (see :mod:`olivine.cli.inputs`), as are the accelerator flags (``--device``,
``--provider``, ``--memory``). When the provider does not run on the device, the device
becomes the provider's (and a note says so), as in Olive.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from olivine.errors import UsageError

DEFAULT_OUTPUT = "run-pass-output"
#: The device Olive picks for a provider that does not run on the named one.
PREFERRED_DEVICE = {"QNNExecutionProvider": "npu", "VitisAIExecutionProvider": "npu",
                    "OpenVINOExecutionProvider": "cpu", "DmlExecutionProvider": "gpu"}


def add_accelerator_flags(p: argparse.ArgumentParser) -> None:
    """Olive's ``--device``, ``--provider`` and ``--memory``."""
    from olivine.accelerator import EXECUTION_PROVIDERS

    p.add_argument("--device", default="cpu", choices=("gpu", "cpu", "npu"),
                   help="target device (default: cpu)")
    p.add_argument("--provider", default="CPUExecutionProvider", choices=EXECUTION_PROVIDERS,
                   metavar="PROVIDER", help="execution provider (default: CPUExecutionProvider)")
    p.add_argument("--memory", default=None, type=memory_bytes,
                   help="the accelerator's memory in bytes (or with KB, MB, GB)")


def memory_bytes(text: str) -> int:
    """Olive's memory values: a byte count, or a number with KB, MB or GB."""
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "b": 1}
    raw = text.strip().lower()
    for suffix, scale in units.items():
        if raw.endswith(suffix):
            try:
                return int(float(raw[: -len(suffix)]) * scale)
            except ValueError:
                break
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected bytes (like 8000000000 or 8GB), got {text!r}") \
            from None


def configure(p: argparse.ArgumentParser) -> None:
    """Olive's flags of ``run-pass``."""
    from olivine.cli import add_log_level
    from olivine.cli.generated import add_cache_dir, add_dry_run, add_save_config
    from olivine.cli.inputs import add_input_model_options

    p.add_argument("--pass-name", "--pass_name", dest="pass_name", default=None,
                   help="the pass to run (see --list-passes)")
    p.add_argument("--pass-config", "--pass_config", dest="pass_config", default=None,
                   help="the pass's options as a JSON object")
    p.add_argument("--list-passes", "--list_passes", dest="list_passes", action="store_true",
                   help="list the installed passes and exit")
    add_input_model_options(p, hf=True, adapter=True, pt=True, default_output=DEFAULT_OUTPUT,
                            required=False)
    add_accelerator_flags(p)
    add_save_config(p)
    add_dry_run(p)
    add_cache_dir(p)
    add_log_level(p)


def _list_passes() -> int:
    from olivine.plugins import get_plugin_host

    host = get_plugin_host()
    names = sorted({getattr(cls, "name", n) for n, cls, _ in host.passes.items()})
    print("Available passes:")
    for i, name in enumerate(names, 1):
        print(f"{i:3d}. {name}")
    print(f"\nTotal: {len(names)} passes available")
    print("\nUsage: olivine run-pass --pass-name <PassName> -m <model> -o <output>")
    return 0


def _pass_options(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--pass-config: not valid JSON ({exc})") from None
    if not isinstance(options, dict):
        raise UsageError(f"--pass-config: expected a JSON object of pass options, got {text!r}")
    if "type" in options:
        raise UsageError("--pass-config: give the pass with --pass-name, not as 'type'")
    return options


def _device_for(device: str, provider: str) -> str:
    from olivine.accelerator import PROVIDER_DEVICES

    valid = PROVIDER_DEVICES.get(provider, ())
    if not valid or device in valid:
        return device
    chosen = PREFERRED_DEVICE.get(provider, valid[0])
    print(f"Note: Setting device to '{chosen}' to match provider '{provider}'", file=sys.stderr)
    return chosen


def build_workflow(args: argparse.Namespace) -> dict[str, Any]:
    """The workflow of one pass on the model the flags name."""
    from olivine.cli.generated import cache_dir
    from olivine.cli.inputs import input_model_config, is_hf
    from olivine.plugins import get_plugin_host

    if not args.pass_name:
        raise UsageError("--pass-name is required when not using --list-passes")
    if not args.model_name_or_path and not getattr(args, "model_script", None):
        raise UsageError("-m/--model_name_or_path is required when not using --list-passes")
    host = get_plugin_host()
    cls = host.passes.get(args.pass_name)
    if cls is None:
        raise UsageError(f"--pass-name: {host.passes.unknown(args.pass_name)}")
    input_model = input_model_config(args)
    if args.test not in (None, False):
        if not is_hf(input_model):
            raise UsageError("--test: only a Hugging Face model has an architecture to copy")
        from olivine.cli.testmodel import build_test_model, test_model_folder

        source = input_model["model_path"]
        folder = test_model_folder(args.test, cache_dir(args.cache_dir), source)
        input_model["model_path"] = str(build_test_model(
            source, folder, args.task, trust_remote_code=bool(args.trust_remote_code)))
    accelerator: dict[str, Any] = {"device": _device_for(args.device, args.provider),
                                   "execution_providers": [args.provider]}
    options = _pass_options(args.pass_config)
    if args.memory is not None:  # Olive's accelerator memory is read by the passes that split
        import attrs

        fields = {f.name for f in attrs.fields(cls.Config)} if attrs.has(cls.Config) else set()
        if "memory" not in fields:
            raise UsageError(f"--memory: {cls.name} does not use the accelerator's memory (only "
                             "passes with a memory option, like CaptureSplitInfo, do)")
        options.setdefault("memory", args.memory)
    return {
        "workflow_id": "run-pass",
        "input_model": input_model,
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [accelerator]}},
        "passes": {str(args.pass_name).lower(): {"type": args.pass_name, **options}},
        "host": "local_system",
        "target": "local_system",
        "output_dir": str(Path(args.output_path).expanduser().resolve()),
        "cache_dir": str(Path(cache_dir(args.cache_dir)).expanduser().resolve()),
        "log_severity_level": 1 if args.log_level is None else args.log_level,
    }


def handle(args: argparse.Namespace) -> int:
    """``olivine run-pass``."""
    from olivine.cli.generated import print_summary, run_generated
    from olivine.output import check_output_dir

    if args.list_passes:
        return _list_passes()
    workflow = build_workflow(args)
    result = run_generated(workflow, dry_run=args.dry_run, save_config=args.save_config,
                           before_run=lambda: check_output_dir(Path(workflow["output_dir"])))
    if args.test not in (None, False):
        from olivine.cli.testmodel import mark_output_folder

        mark_output_folder(args.output_path)
    if result is not None and workflow["log_severity_level"] < 4:
        print_summary(result)
    return 0


def add(sub: Any) -> None:
    """Add ``run-pass`` to the sub-parsers ``sub``."""
    p = sub.add_parser("run-pass", help="run one pass on one model (Olive's run-pass)",
                       description=__doc__.split("\n\n")[0] if __doc__ else None)
    configure(p)
    p.set_defaults(handler=handle)
