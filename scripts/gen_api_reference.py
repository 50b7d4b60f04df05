"""Generate docs/api-reference.md from the docstrings of olivine's plugin API.

    python scripts/gen_api_reference.py           # rewrite the document
    python scripts/gen_api_reference.py --check   # exit 1 when it is out of date

``tests/host/test_api_docs.py`` runs the check: the reference never drifts from the code.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "api-reference.md"

SECTIONS: list[tuple[str, str, list[str]]] = [
    ("Passes", "A pass turns one model into another; its options are an attrs class.",
     ["Pass", "PassContext", "NoConfig", "option", "OptionInfo", "option_info"]),
    ("Model handles", "Frozen descriptions of a model on disk: what passes take and return.",
     ["ModelHandle", "HfModel", "OnnxModel", "PyTorchModel", "AdapterModel", "CompositeModel",
      "handle_from_dict"]),
    ("Evaluators", "An evaluator measures metrics of a model.",
     ["Evaluator", "EvalContext", "MetricConfig", "SubMetric"]),
    ("Systems", "A system runs steps and search candidates, from requests that are plain data.",
     ["System", "SystemConfig", "StepRequest", "StepOutcome", "CandidateRequest", "CandidateRunner",
      "run_candidate", "LocalSystem"]),
]
TESTING = ["run_pass", "run_workflow", "assert_config_error", "make_onnx_model", "make_hf_model",
           "make_workflow", "input_model_config", "using_plugin", "cli_main", "seed", "threads",
           "pin_threads", "record_quality"]


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj)).replace("'", "")
    except (TypeError, ValueError):
        return "(...)"


def _attribute_comments(cls: type) -> dict[str, str]:
    """``#:`` comments above the class attributes of ``cls`` (its own source only)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    tree = ast.parse(source)
    out: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node in body:
        target = node.target if isinstance(node, ast.AnnAssign) else \
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if not isinstance(target, ast.Name):
            continue
        comments = []
        i = node.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#:"):
            comments.insert(0, lines[i].strip()[2:].strip())
            i -= 1
        if comments:
            out[target.id] = " ".join(comments)
    return out


def _class(name: str, cls: type) -> list[str]:
    out = [f"### `olivine.{name}`", ""]
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    if bases:
        out += [f"*Subclass of {', '.join(f'`{b}`' for b in bases)}.*", ""]
    out += [_doc(cls), ""]
    comments = _attribute_comments(cls)
    rows = []
    if attrs.has(cls):
        for field in attrs.fields(cls):
            if field.name.startswith("_") or field.name not in inspect.get_annotations(cls):
                continue
            # the annotation as written (field.type is resolved once a config was structured)
            ann = inspect.get_annotations(cls).get(field.name, "")
            kind = ann if isinstance(ann, str) else getattr(ann, "__name__", repr(ann))
            default = "required" if field.default is attrs.NOTHING else \
                "factory" if isinstance(field.default, attrs.Factory) else repr(field.default)  # type: ignore[arg-type]
            help_text = comments.get(field.name) or str(field.metadata.get("help", ""))
            rows.append(f"- `{field.name}: {kind}` ({default}): {help_text}".rstrip(": "))
    for attr, text in comments.items():
        if attr.startswith("_") or any(r.startswith(f"- `{attr}:") for r in rows):
            continue
        rows.append(f"- `{attr}`: {text}")
    if rows:
        out += ["Attributes:", "", *rows, ""]
    methods = [(n, m) for n, m in cls.__dict__.items()
               if not n.startswith("_") and (inspect.isfunction(m) or isinstance(m, (classmethod,
                                                                                     staticmethod)))]
    for method_name, method in methods:
        fn = method.__func__ if isinstance(method, (classmethod, staticmethod)) else method
        prefix = "classmethod " if isinstance(method, classmethod) else ""
        out += [f"- {prefix}`{method_name}{_signature(fn)}`", ""]
        doc = _doc(fn)
        if doc:
            out += [textwrap.indent(doc, "  "), ""]
    return out


def _function(qualified: str, fn: Any) -> list[str]:
    if not (inspect.isfunction(fn) or inspect.isbuiltin(fn)):  # a type alias
        shown = repr(fn).replace("olivine.systems.base.", "").replace("typing.", "")
        return [f"### `{qualified}`", "", f"A type: `{shown}`.", ""]
    return [f"### `{qualified}{_signature(fn)}`", "", _doc(fn), ""]


def render() -> str:
    """The whole document."""
    import olivine
    import olivine.testing

    out = ["# Plugin API reference", "",
           "<!-- generated by scripts/gen_api_reference.py from the docstrings; do not edit -->", "",
           f"API version **{olivine.API_VERSION}** (`olivine.API_VERSION`). A plugin may import "
           "the names below from `olivine`, and the names in `__all__` of the public modules "
           f"({', '.join(f'`{m}`' for m in olivine.PUBLIC_MODULES)}); everything else is "
           "private. `tox -e lint` checks the plugins of this repository "
           "(`scripts/check_api.py`). A plugin states the API versions it supports as a module "
           "attribute of its entry-point module, `olivine_api = \">=1.1,<2\"`; a plugin whose "
           "range excludes the host's API is skipped at load with a message saying why.", "",
           "How to write a plugin: [writing-plugins.md](writing-plugins.md); a tutorial: "
           "[plugin-tutorial.md](plugin-tutorial.md).", ""]
    documented: set[str] = set()
    for title, intro, names in SECTIONS:
        out += [f"## {title}", "", intro, ""]
        for name in names:
            obj = getattr(olivine, name)
            documented.add(name)
            out += _class(name, obj) if isinstance(obj, type) else _function(f"olivine.{name}", obj)
    out += ["## Test kit: `olivine.testing`", "", _doc(olivine.testing), ""]
    for name in TESTING:
        out += _function(f"olivine.testing.{name}", getattr(olivine.testing, name))
    out += ["## Other names in `olivine`", ""]
    for name in olivine.__all__:
        if name in documented or name.startswith("__"):
            continue
        obj = getattr(olivine, name)
        first = _doc(obj).split("\n\n")[0].replace("\n", " ") if (inspect.isclass(obj)
                                                                  or inspect.isfunction(obj)) \
            else f"`{obj!r}`" if isinstance(obj, str) else ""
        out.append(f"- `{name}`: {first}".rstrip(": "))
    out += ["", "## Public modules", ""]
    for module in olivine.PUBLIC_MODULES:
        mod = importlib.import_module(module)
        first = _doc(mod).split("\n\n")[0].replace("\n", " ")
        out += [f"### `{module}`", "", first, "", ", ".join(f"`{n}`" for n in mod.__all__), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    """Write the document, or with ``--check`` compare."""
    text = render()
    if "--check" in argv:
        if not TARGET.is_file() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(REPO)} is out of date: run python scripts/gen_api_reference.py")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
