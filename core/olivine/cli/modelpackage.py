"""``olivine generate-model-package``: olivine (or Olive) output folders as one ORT model package.

Olive 0.13's layout (the ONNX Runtime model-package proposal)::

    OUT.ortpackage/
      manifest.json                       package name and version, components, producer
      configs/                            shared assets: tokenizer, genai_config.json without
                                          the per-variant fields, chat template, ...
      models/<component>/metadata.json    each variant's execution provider
      models/<component>/<variant>/       the ONNX file(s), their external data, and
                                          genai_config_overlay.json (a JSON merge patch)

Every ``--source`` is an onnxruntime-genai model folder (``genai_config.json`` beside the
ONNX files); its folder name is the variant name and each role of its genai_config
(``decoder``, ``vision``, ``embedding``, ...) is a component. The package is written in a
staging folder beside the output and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from olivine.errors import UsageError

SUFFIX = ".ortpackage"
MODEL_SUFFIXES = {".onnx", ".bin", ".data", ".xml"}
VARIANT_KEYS = ("context_length", "pad_token_id", "eos_token_id", "bos_token_id", "type")
STRIP_KEYS = ("filename", "session_options", "pipeline", *VARIANT_KEYS)
EP_ALIASES = {"CPUExecutionProvider": "CPU", "CUDAExecutionProvider": "cuda",
              "DmlExecutionProvider": "DML", "WebGpuExecutionProvider": "WebGPU",
              "JsExecutionProvider": "JS", "QNNExecutionProvider": "qnn",
              "OpenVINOExecutionProvider": "OpenVINO", "ROCMExecutionProvider": "rocm",
              "TensorrtExecutionProvider": "tensorrt",
              "NvTensorRTRTXExecutionProvider": "NvTensorRtRtx",
              "XnnpackExecutionProvider": "XNNPACK", "WebNNExecutionProvider": "WEBNN",
              "AzureExecutionProvider": "AZURE", "VitisAIExecutionProvider": "VitisAI",
              "CoreMLExecutionProvider": "CoreML", "MIGraphXExecutionProvider": "MIGraphX",
              "SNPEExecutionProvider": "SNPE"}
_EP_OF_ALIAS = {alias.lower(): ep for ep, alias in EP_ALIASES.items()}


def configure(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine generate-model-package`` (Olive's)."""
    from olivine.cli import add_log_level
    from olivine.cli.sharedcache_cmd import add_disable_telemetry

    p.add_argument("-s", "--source", action="append", required=True,
                   help="an output folder with genai_config.json (repeat for more variants)")
    p.add_argument("-o", "--output_path", "--output-path", dest="output_path", required=True,
                   help=f"the package folder ({SUFFIX} is appended when missing); must be empty "
                        "or not exist")
    p.add_argument("--model_name", default=None, help="package name (default: the folder's name)")
    p.add_argument("--model_version", default="1.0", help="package version (default 1.0)")
    p.add_argument("--dry_run", "--dry-run", dest="dry_run", action="store_true",
                   help="check the sources and print the package's layout; write nothing")
    add_log_level(p)
    add_disable_telemetry(p)


def safe_relative(name: object) -> bool:
    """True for a relative path that stays below its folder on POSIX and Windows alike."""
    if not isinstance(name, str) or not name:
        return False
    text = name.replace("\\", "/")
    if text.startswith("/") or PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute():
        return False
    if any(part in ("", "..") for part in PurePosixPath(text).parts):
        return False
    return all(not (len(part) >= 2 and part[1] == ":") for part in PureWindowsPath(text).parts)


def _roles(genai: dict[str, Any]) -> dict[str, dict[str, Any]]:
    model = genai.get("model")
    if not isinstance(model, dict):
        return {}
    return {k: v for k, v in model.items() if isinstance(v, dict) and ("filename" in v or "pipeline" in v)}


def _stage_files(body: dict[str, Any]) -> list[str]:
    pipeline = body.get("pipeline")
    if isinstance(pipeline, list) and pipeline:
        return [s["filename"] for stage in pipeline if isinstance(stage, dict)
                for s in stage.values() if isinstance(s, dict) and isinstance(s.get("filename"), str)]
    name = body.get("filename")
    return [name] if isinstance(name, str) and name else []


def read_source(path: Path) -> dict[str, Any]:
    """A source folder's genai_config and its roles' ONNX files; UsageError naming ``--source``."""
    if not path.is_dir():
        raise UsageError(f"--source {str(path)!r}: no such folder")
    config = path / "genai_config.json"
    if not config.is_file():
        raise UsageError(f"--source {str(path)!r} has no genai_config.json: each source must be an "
                         "onnxruntime-genai model folder (an output of ModelBuilder, auto-opt, ...)")
    try:
        genai = json.loads(config.read_text())
    except ValueError as exc:
        raise UsageError(f"--source {str(path)!r}: genai_config.json is not valid JSON: {exc}") from None
    roles: dict[str, list[Path]] = {}
    for role, body in _roles(genai if isinstance(genai, dict) else {}).items():
        files = []
        for name in _stage_files(body):
            if not safe_relative(name):
                raise UsageError(f"--source {str(path)!r}: role {role!r} names {name!r}, which is "
                                 "not a safe relative path")
            if not (path / name).is_file():
                raise UsageError(f"--source {str(path)!r}: role {role!r} names {name!r}, which "
                                 "does not exist")
            files.append(path / name)
        if files:
            roles[role] = files
    if not roles:
        raise UsageError(f"--source {str(path)!r}: no role of genai_config.json names an ONNX file "
                         "(model.<role>.filename or pipeline)")
    return {"path": path, "name": path.name, "genai": genai, "roles": roles}


def role_ep(body: dict[str, Any]) -> str:
    """The execution provider a role's session options name (the first that is not CPU)."""
    blocks = [body.get("session_options")] + [
        s.get("session_options") for stage in body.get("pipeline") or [] if isinstance(stage, dict)
        for s in stage.values() if isinstance(s, dict)]
    for block in blocks:
        if not isinstance(block, dict):
            continue
        for entry in block.get("provider_options") or []:
            for alias in entry if isinstance(entry, dict) else []:
                ep = _EP_OF_ALIAS.get(str(alias).lower())
                if ep and ep != "CPUExecutionProvider":
                    return ep
    return "CPUExecutionProvider"


def _compatibility(onnx_file: Path, ep: str) -> str | None:
    import onnx

    try:
        proto = onnx.load(str(onnx_file), load_external_data=False)
    except Exception:  # not readable as ONNX: no compatibility string, as Olive
        return None
    prefix = "ep_compatibility_info."
    found = {p.key[len(prefix):]: p.value for p in proto.metadata_props if p.key.startswith(prefix)}
    value = found.get(ep) or (next(iter(found.values())) if len(found) == 1 else None)
    return value.strip() if value and value.strip() else None


def _external(onnx_file: Path) -> list[str]:
    import onnx

    proto = onnx.load(str(onnx_file), load_external_data=False)
    out: list[str] = []
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location" and safe_relative(entry.value) and entry.value not in out:
                    out.append(entry.value)
    return out


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _copy(src: Path, dst: Path) -> None:
    if dst.exists():
        if dst.is_file() and _sha(src) == _sha(dst):
            return
        raise UsageError(f"--source: two files map to {dst.name} in one variant folder with "
                         f"different contents ({src}); rename one")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in STRIP_KEYS}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _overlay(source: dict[str, Any], role: str, files: list[Path]) -> dict[str, Any]:
    body = source["genai"]["model"][role]
    patch: dict[str, Any] = {}
    names = [f.name for f in files]
    pipeline = body.get("pipeline")
    if isinstance(pipeline, list) and pipeline:
        stages, i = [], 0
        for stage in json.loads(json.dumps(pipeline)):
            for stage_body in stage.values() if isinstance(stage, dict) else []:
                if isinstance(stage_body, dict) and isinstance(stage_body.get("filename"), str):
                    stage_body["filename"] = names[i] if i < len(names) else \
                        Path(stage_body["filename"]).name
                    i += 1
            stages.append(stage)
        patch["pipeline"] = stages
    elif names:
        patch["filename"] = names[0]
    if isinstance(body.get("session_options"), dict):
        patch["session_options"] = json.loads(json.dumps(body["session_options"]))
    model_patch: dict[str, Any] = {role: patch} if patch else {}
    if role == next(iter(_roles(source["genai"]))):  # the primary role carries the model's scalars
        for key in VARIANT_KEYS:
            if key in source["genai"]["model"]:
                model_patch[key] = json.loads(json.dumps(source["genai"]["model"][key]))
    return {"model": model_patch}


def _variant(stage: Path, source: dict[str, Any], role: str, files: list[Path]) -> dict[str, Any]:
    vdir = stage / "models" / role / source["name"]
    vdir.mkdir(parents=True, exist_ok=True)
    stems: set[str] = set()
    for f in files:
        _copy(f, vdir / f.name)
        stems.add(f.stem)
        for location in _external(f):
            blob = (f.parent / location).resolve()
            if blob.is_file() and blob.is_relative_to(f.parent.resolve()):
                _copy(blob, vdir / location)
    folder = files[0].parent
    for entry in sorted(folder.iterdir()):  # sidecars: model.onnx.data, model_ctx.bin, ...
        if entry.is_file() and entry.suffix in MODEL_SUFFIXES and any(
                entry.name == s or entry.name.startswith((f"{s}.", f"{s}_")) for s in stems):
            _copy(entry, vdir / entry.name)
    _write_json(vdir / "genai_config_overlay.json", _overlay(source, role, files))
    ep = role_ep(source["genai"]["model"][role])
    out: dict[str, Any] = {"ep": ep}
    compat = _compatibility(files[0], ep)
    if compat:
        out["compatibility_string"] = compat
    return out


def _configs(stage: Path, base: dict[str, Any], components: list[str]) -> None:
    configs = stage / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    model_dirs = {PurePosixPath(n.replace("\\", "/")).parts[0] for files in base["roles"].values()
                  for n in (f.relative_to(base["path"]).as_posix() for f in files) if "/" in n}
    for f in sorted(base["path"].iterdir()):
        if f.is_dir() and f.name in model_dirs:
            continue
        if f.is_file() and f.suffix in MODEL_SUFFIXES:
            continue
        if f.name == "genai_config.json":
            genai = _strip(base["genai"])
            for role in components:
                if isinstance(genai.get("model", {}).get(role), dict):
                    genai["model"][role]["component"] = role
            _write_json(configs / f.name, genai)
        elif f.is_dir():
            shutil.copytree(f, configs / f.name)
        elif f.is_file():
            shutil.copy2(f, configs / f.name)


def _task(sources: list[dict[str, Any]]) -> str:
    for source in sources:
        model = source["genai"].get("model")
        roles = {k for k, v in model.items() if isinstance(v, dict)} if isinstance(model, dict) else set()
        if {"encoder", "decoder"} <= roles:
            return "text2text_generation"
        if "decoder" in roles:
            return "text_generation"
    return ""


def build_package(sources: list[dict[str, Any]], stage: Path, name: str, version: str) -> dict[str, Any]:
    """Write the package into ``stage``; return its manifest."""
    from olivine import __version__

    components: dict[str, dict[str, Any]] = {}
    for source in sources:
        for role, files in source["roles"].items():
            components.setdefault(role, {})[source["name"]] = _variant(stage, source, role, files)
    for component, variants in components.items():
        _write_json(stage / "models" / component / "metadata.json",
                    {"schema_version": 1, "component_name": component, "variants": variants})
    base = max(sources, key=lambda s: len(s["roles"]))  # the most roles: the fullest base config
    _configs(stage, base, list(components))
    producer = {"tool": "olivine", "tool_version": __version__, "model_name": name,
                "model_version": version}
    task = _task(sources)
    if task:
        producer["task"] = task
    manifest = {"schema_version": 1, "package_name": name, "package_version": version,
                "components": list(components), "configs_dir": "configs", "producer": producer}
    _write_json(stage / "manifest.json", manifest)
    return manifest


def cmd_generate_model_package(args: argparse.Namespace) -> int:
    """``olivine generate-model-package``."""
    from olivine.safepath import component_problem

    out = Path(args.output_path).expanduser()
    if out.suffix != SUFFIX:
        out = out.with_name(out.name + SUFFIX)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--output_path {str(out)!r} exists and is not an empty folder; give a new "
                         "or empty folder (a package never mixes with older files)")
    sources, seen = [], set()
    for value in args.source:
        source = read_source(Path(value).expanduser())
        problem = component_problem(source["name"])
        if problem or source["name"] in seen:
            raise UsageError(f"--source {value!r}: variant names come from the folder names, and "
                             f"{source['name']!r} {problem or 'is used twice'}; rename a folder")
        seen.add(source["name"])
        sources.append(source)
    name = args.model_name or out.stem
    if args.dry_run:
        for source in sources:
            for role, files in source["roles"].items():
                print(f"models/{role}/{source['name']}/: {', '.join(f.name for f in files)} "
                      f"({role_ep(source['genai']['model'][role])})")
        print(f"package {name} {args.model_version}: {out} (dry run: nothing written)")
        return 0
    stage = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        build_package(sources, stage, name, args.model_version)
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rename(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"Model package generated at {out}")
    return 0
