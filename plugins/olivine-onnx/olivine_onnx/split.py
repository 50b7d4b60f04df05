"""Splitting an ONNX model into a chain of parts by module name, and composing parts back.

``SplitModel`` assigns each node of the main graph to a split by the longest dotted prefix of
its name found in the split assignments (``/model/layers.3/mlp/MatMul`` reads as
``model.layers.3.mlp.MatMul``; ``model.layers.3`` may name split 1). A node never goes to an
earlier split than its inputs' producers; unassigned nodes follow their producers, or (before
any assigned node) go to the first split that reads them. Constant and DequantizeLinear nodes
are copied into every split that reads them; QuantizeLinear stays with its producer. Tensors
crossing splits become outputs of one part and inputs of the next.
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
import onnx
from onnx import helper

from olivine import CompositeModel, ModelHandle, OlivineError, OnnxModel, PassContext, UsageError
from olivine.onnxsave import save_onnx
from olivine.ortshapes import lean_shape_inference

log = logging.getLogger("olivine.pass.split")


def parse_assignments(value: dict[str, int] | str) -> dict[str, int]:
    """``{"name": split}`` from a mapping or Olive's ``"name1=0;name2=1"`` text."""
    if isinstance(value, dict):
        return {str(k): int(v) for k, v in value.items()}
    out = {}
    for i, item in enumerate(p for p in value.split(";") if p.strip()):
        name, sep, number = item.partition("=")
        if not sep or not number.strip().lstrip("-").isdigit():
            raise UsageError(f"split_assignments: item {i} ({item!r}) is not NAME=SPLIT")
        out[name.strip()] = int(number)
    return out


def assignment_of(node_name: str, assignments: dict[str, int]) -> int | None:
    """The split of the longest dotted prefix of ``node_name`` found in ``assignments``; when
    none matches, the same without leading components (an exporter's wrapper module, as in
    ``/model/model/layers.0/...``)."""
    names = node_name.replace("/", ".").lstrip(".").split(".")
    for start in range(len(names)):
        parts = names[start:]
        while parts:
            found = assignments.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
    return None


def _find_assignments(proto: onnx.ModelProto, model: ModelHandle,
                      given: dict[str, int] | str | None) -> dict[str, int]:
    if given:
        return parse_assignments(given)
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("split_assignments"):
        return parse_assignments(meta["split_assignments"])
    attr = model.attrs_dict().get("split_assignments")
    if attr:
        return parse_assignments(attr)
    raise UsageError("SplitModel: no split assignments: set split_assignments, or run "
                     "CaptureSplitInfo before the ONNX conversion (they are then in the model's "
                     "split_assignments metadata)")


def assign_nodes(graph: onnx.GraphProto, assignments: dict[str, int]) -> list[list[int]]:
    """For each node of ``graph`` (in order), the splits it goes to (empty: none)."""
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output if out}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(graph.node):
        for name in {x for x in n.input if x}:
            consumers[name].append(i)
    parents = [[producer[x] for x in n.input if x in producer] for n in graph.node]
    children = [sorted({c for out in n.output for c in consumers.get(out, [])})
                for n in graph.node]
    chosen: dict[int, int] = {}
    constants, dqs = set(), set()
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant":
            constants.add(i)
            continue
        if node.op_type == "DequantizeLinear":
            dqs.add(i)
        own = None if node.op_type in ("QuantizeLinear", "DequantizeLinear") \
            else assignment_of(node.name, assignments)
        above = [chosen[p] for p in parents[i] if p in chosen]
        if own is None and not above:
            continue
        chosen[i] = max([*([own] if own is not None else []), *above])
    for i in reversed(range(len(graph.node))):
        if i in chosen or i in constants:
            continue
        below = [chosen[c] for c in children[i] if c in chosen]
        chosen[i] = min(below) if below else 0
    splits = [[chosen[i]] if i in chosen else [] for i in range(len(graph.node))]
    for i in [*sorted(dqs), *sorted(constants)]:  # copies go to every split reading them
        readers = {s for c in children[i] for s in splits[c]}
        if readers:
            splits[i] = sorted(readers)
    return splits


def _value_infos(proto: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    infos = {v.name: v for v in [*proto.graph.value_info, *proto.graph.input, *proto.graph.output]}
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        for v in inferred.graph.value_info:
            infos.setdefault(v.name, v)
    except Exception as exc:
        log.debug("onnx shape inference failed: %s", exc)
    return infos


def _symbolic_infos(proto: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    with lean_shape_inference():  # a failure writes nothing into the cwd
        inferred = SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    return {v.name: v for v in inferred.graph.value_info}


def split_proto(proto: onnx.ModelProto, assignments: dict[str, int]) -> list[tuple[int, onnx.ModelProto]]:
    """The non-empty parts of ``proto``, each with its split number, in order."""
    graph = proto.graph
    node_splits = assign_nodes(graph, assignments)
    count = max((s for ss in node_splits for s in ss), default=0) + 1
    inits = {t.name: t for t in graph.initializer}
    graph_inputs = {v.name: v for v in graph.input}
    graph_outputs = [o.name for o in graph.output]
    infos = _value_infos(proto)
    producer_split: dict[str, list[int]] = {}
    consumers: dict[str, set[int]] = defaultdict(set)
    for node, splits in zip(graph.node, node_splits, strict=True):
        for out in node.output:
            producer_split[out] = splits
        for name in node.input:
            consumers[name].update(splits)
    parts: dict[int, dict[str, Any]] = {
        i: {"nodes": [], "inputs": {}, "inits": {}, "outputs": []} for i in range(count)}
    missing: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for node, splits in zip(graph.node, node_splits, strict=True):
        for s in splits:
            part = parts[s]
            made = {o for n in part["nodes"] for o in n.output}
            for name in node.input:
                if not name or name in made or name in part["inputs"] or name in part["inits"]:
                    continue
                if name in inits:
                    part["inits"][name] = inits[name]
                elif name in graph_inputs:
                    part["inputs"][name] = graph_inputs[name]
                elif name in infos:
                    part["inputs"][name] = infos[name]
                else:
                    part["inputs"][name] = None
                    missing[name].append((s, "inputs"))
            part["nodes"].append(node)
            for out in node.output:
                if not out:
                    continue
                if out in graph_outputs or consumers.get(out, set()) - set(splits):
                    part["outputs"].append(out)
                    if out not in infos:
                        missing[out].append((s, "outputs"))
    if missing:
        found = _symbolic_infos(proto)
        lost = [n for n in missing if n not in found]
        if lost:
            raise OlivineError(f"SplitModel: no type is known for {', '.join(lost[:5])}, which "
                               "cross splits; run shape inference (GraphSurgeries InferShapes) "
                               "first")
        infos.update({n: found[n] for n in missing})
    out = []
    for s in range(count):
        part = parts[s]
        if not part["nodes"]:
            log.info("split %d has no nodes; skipped", s)
            continue
        inputs = [v if v is not None else infos[n] for n, v in part["inputs"].items()]
        outputs = [graph.output[graph_outputs.index(n)] if n in graph_outputs else infos[n]
                   for n in part["outputs"]]
        new_graph = helper.make_graph(part["nodes"], graph.name, inputs, outputs,
                                      list(part["inits"].values()))
        made = {o for n in part["nodes"] for o in n.output}
        new_graph.value_info.extend(v for n, v in infos.items()
                                    if n in made and n not in part["outputs"] and n not in graph_inputs
                                    and v.type.WhichOneof("value") is not None)
        model = helper.make_model(new_graph, opset_imports=list(proto.opset_import),
                                  producer_name="olivine")
        model.ir_version = proto.ir_version
        model.functions.extend(proto.functions)
        helper.set_model_props(model, {p.key: p.value for p in proto.metadata_props})
        out.append((s, model))
    return out


def split_model(model: ModelHandle, config: Any, context: PassContext) -> CompositeModel:
    """The pass ``SplitModel``: a composite of ``split_<i>`` parts in one folder."""
    if not isinstance(model, OnnxModel):
        raise UsageError(f"SplitModel takes ONNX models, got a {model.kind} model")
    proto = onnx.load(str(model.model_file()), load_external_data=True)
    assignments = _find_assignments(proto, model, config.split_assignments)
    parts = split_proto(proto, assignments)
    components: list[tuple[str, OnnxModel]] = []
    for s, part in parts:
        name = f"split_{s}"
        options = config
        if config.external_data_name and len(parts) > 1:
            options = attrs.evolve(config, external_data_name=f"{name}_{config.external_data_name}")
        handle = save_onnx(part, context.work_dir, options, file_name=f"{name}.onnx", source=model,
                           sidecars=not components)
        components.append((name, handle))
    log.info("split into %d parts: %s", len(components), ", ".join(n for n, _ in components))
    return CompositeModel(path=str(context.work_dir), components=tuple(components),
                          attributes=model.attrs_dict())


def compose_protos(protos: list[onnx.ModelProto]) -> onnx.ModelProto:
    """One model chaining ``protos``: each part's outputs feed the later parts' inputs of the same
    name; the composed outputs are those no part reads."""
    seen_in: set[str] = set()
    seen_out: set[str] = set()
    for i, p in enumerate(protos):
        ins = {v.name for v in p.graph.input} - {t.name for t in p.graph.initializer}
        outs = {v.name for v in p.graph.output}
        if outs & seen_in:
            raise UsageError(f"ComposeOnnxModels: part {i} outputs {sorted(outs & seen_in)}, "
                             "which an earlier part reads: the parts are not a chain")
        if outs & seen_out:
            raise UsageError(f"ComposeOnnxModels: part {i} outputs {sorted(outs & seen_out)}, "
                             "already an output of an earlier part")
        seen_in |= ins
        seen_out |= outs
    final = seen_out - seen_in
    first = protos[0]
    inputs: dict[str, onnx.ValueInfoProto] = {}
    outputs: dict[str, onnx.ValueInfoProto] = {}
    inits: dict[str, onnx.TensorProto] = {}
    nodes: list[onnx.NodeProto] = []
    node_names: dict[str, onnx.NodeProto] = {}
    infos: dict[str, onnx.ValueInfoProto] = {}
    produced: set[str] = set()
    for i, p in enumerate(protos):
        for t in p.graph.initializer:
            if t.name in inits and t != inits[t.name]:
                raise UsageError(f"ComposeOnnxModels: initializer {t.name!r} differs between parts")
            inits.setdefault(t.name, t)
        for v in p.graph.input:
            if v.name in inits:
                continue
            if v.name in produced or v.name in inputs:
                known = outputs.get(v.name) or inputs.get(v.name)
                if known is not None and known.type != v.type:
                    raise UsageError(f"ComposeOnnxModels: part {i} reads {v.name!r} as another "
                                     "type or shape than the earlier part gives")
                continue
            inputs[v.name] = v
        for n in p.graph.node:
            if n.name and n.name in node_names:
                if node_names[n.name] != n:
                    raise UsageError(f"ComposeOnnxModels: node {n.name!r} differs between parts")
                continue  # a shared Constant or DequantizeLinear copy
            if n.name:
                node_names[n.name] = n
            nodes.append(n)
            produced.update(n.output)
        for v in p.graph.output:
            outputs.setdefault(v.name, v)
        for v in p.graph.value_info:
            infos.setdefault(v.name, v)
    graph = helper.make_graph(
        nodes, first.graph.name, list(inputs.values()),
        [v for n, v in outputs.items() if n in final], list(inits.values()),
        value_info=[v for n, v in {**infos, **outputs}.items() if n not in final and n not in inputs])
    opsets: dict[str, int] = {}
    for p in protos:
        for o in p.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name="olivine")
    model.ir_version = max(p.ir_version for p in protos)
    seen_fn = set()
    for p in protos:
        for f in p.functions:
            if (f.domain, f.name) not in seen_fn:
                seen_fn.add((f.domain, f.name))
                model.functions.append(f)
    helper.set_model_props(model, {p.key: p.value for p in first.metadata_props})
    return model


def compose_models(model: ModelHandle, config: Any, context: PassContext) -> OnnxModel:
    """The pass ``ComposeOnnxModels``: the composite's parts as one ONNX model."""
    if not isinstance(model, CompositeModel) or not model.components:
        raise UsageError(f"ComposeOnnxModels takes a composite model of ONNX parts, got a "
                         f"{model.kind} model")
    bad = [n for n, h in model.components if not isinstance(h, OnnxModel)]
    if bad:
        raise UsageError(f"ComposeOnnxModels: component(s) {', '.join(bad)} are not ONNX models")
    if model.attrs_dict().get("llm_pipeline"):
        raise UsageError("ComposeOnnxModels: composing an llm_pipeline model (embeddings, "
                         "context, iterator, lm_head groups) is not supported by olivine yet")
    protos = [onnx.load(str(h.model_file()), load_external_data=True)  # type: ignore[attr-defined]
              for _, h in model.components]
    composed = compose_protos(protos)
    out = save_onnx(composed, context.work_dir, config, file_name="model.onnx",
                    **model.attrs_dict())
    _copy_sidecars(Path(model.path), context.work_dir)
    return out


def _copy_sidecars(src: Path, dest: Path) -> None:
    """Files beside the parts (tokenizer, configs), not the parts or their data."""
    if not src.is_dir():
        return
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix not in (".onnx", ".data") and not f.name.endswith(".onnx.data") \
                and f.name not in ("run.json", "summary.txt") and not (dest / f.name).exists():
            shutil.copy2(f, dest / f.name)
