"""The attrs classes of a workflow config's sections (current Olive form)."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from olivine.config.typed import ALIASES


def _log_level(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 4:
        raise ValueError(f"log_severity_level: expected 0 (verbose) to 4 (quiet), got {value}")


#: Olive's IoConfig keys
IO_CONFIG_KEYS = ("input_names", "input_shapes", "input_types", "output_names", "output_shapes",
                  "output_types", "dynamic_axes", "dynamic_shapes", "string_to_int_dim_params",
                  "kv_cache")

#: Olive's KVCacheConfig keys
KV_CACHE_KEYS = ("ort_past_key_name", "ort_past_value_name", "ort_present_key_name",
                 "ort_present_value_name", "num_hidden_layers", "num_attention_heads",
                 "hidden_size", "world_size", "past_sequence_length", "batch_size", "dtype",
                 "shared_kv", "sequence_length_idx", "past_kv_dynamic_axis",
                 "present_kv_dynamic_axis")


def _io_config(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    """Olive's IoConfig: known keys, list-valued names and shapes; a string names a function."""
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, dict):
        raise ValueError(f"io_config: expected an object (or the name of a function in "
                         f"model_script), got {type(value).__name__}")
    from olivine.errors import did_you_mean

    for key, item in value.items():
        if key not in IO_CONFIG_KEYS:
            raise ValueError(f"io_config.{key}: unknown key{did_you_mean(key, IO_CONFIG_KEYS)}; "
                             f"expected some of {', '.join(IO_CONFIG_KEYS)}")
        if key.endswith(("_names", "_shapes", "_types")) and item is not None and \
                not isinstance(item, list):
            raise ValueError(f"io_config.{key}: expected a list, got {type(item).__name__}")
    kv = value.get("kv_cache")
    if kv is not None and not isinstance(kv, bool | dict):
        raise ValueError(f"io_config.kv_cache: expected true, false or an object, got {kv!r}")
    for key in kv if isinstance(kv, dict) else ():
        if key not in KV_CACHE_KEYS:
            raise ValueError(f"io_config.kv_cache.{key}: unknown key"
                             f"{did_you_mean(key, KV_CACHE_KEYS)}; expected some of "
                             f"{', '.join(KV_CACHE_KEYS)}")
    for kind in ("input", "output"):
        names = value.get(f"{kind}_names") or []
        for extra in ("shapes", "types"):
            got = value.get(f"{kind}_{extra}")
            if got is not None and names and len(got) != len(names):
                raise ValueError(f"io_config.{kind}_{extra}: {len(got)} entries for "
                                 f"{len(names)} {kind}_names")


@attrs.frozen
class PyTorchModelSpec:
    """``input_model`` of type ``PyTorchModel`` (Olive's current form): a torch model a
    user function loads."""

    type: str
    model_path: str | None = attrs.field(default=None, metadata={
        "help": "passed to model_loader (a file, a folder or a hub id)"})
    model_file_format: str = attrs.field(default="PyTorch.StateDict", metadata={
        "help": "PyTorch.StateDict or PyTorch.EntireModel (loaded by model_loader), "
                "PyTorch.TorchScript (torch.jit.load of model_path)"})
    model_loader: str | None = attrs.field(default=None, metadata={
        "help": "function in model_script: model_loader(model_path) -> torch.nn.Module"})
    model_script: str | None = attrs.field(default=None, metadata={
        "help": "Python file defining model_loader, dummy_inputs_func and io_config functions"})
    script_dir: str | None = attrs.field(default=None, metadata={
        "help": "folder put on sys.path before model_script is imported"})
    io_config: dict[str, Any] | str | None = attrs.field(default=None, validator=_io_config, metadata={
        "help": "input/output names, shapes, types, dynamic_axes; or a function in model_script"})
    dummy_inputs_func: str | None = attrs.field(default=None, metadata={
        "help": "function in model_script: dummy_inputs_func(model) -> inputs for the export"})
    model_attributes: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class HfModelSpec:
    """``input_model`` of type ``HfModel``: a local folder or a Hugging Face hub id."""

    type: str
    model_path: str = attrs.field(metadata={"help": "a local folder or a hub id (org/name)"})
    task: str = attrs.field(default="text-generation", metadata={"help": "transformers task"})
    load_kwargs: dict[str, Any] = attrs.field(
        factory=dict, metadata={"help": "from_pretrained options: trust_remote_code, torch_dtype, revision"})
    adapter_path: str | None = attrs.field(default=None, metadata={"help": "a LoRA adapter folder"})
    io_config: dict[str, Any] | None = attrs.field(default=None, validator=_io_config, metadata={
        "help": "Olive's IoConfig for the ONNX export: input/output names, shapes, types, "
                "dynamic_axes, kv_cache"})
    model_attributes: dict[str, Any] = attrs.field(factory=dict)
    trust_remote_code: bool | None = attrs.field(
        default=None, metadata={"help": "shortcut for load_kwargs.trust_remote_code"})


@attrs.frozen
class OnnxModelSpec:
    """``input_model`` of type ``ONNXModel``: a .onnx file or a folder holding one."""

    type: str
    model_path: str = attrs.field(metadata={"help": "a .onnx file or a folder"})
    onnx_file_name: str | None = attrs.field(default=None, metadata={"help": "the file in model_path"})
    model_attributes: dict[str, Any] = attrs.field(factory=dict)
    inference_settings: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class HfConfigOld:
    """``input_model.config.hf_config`` of Olive's older ``PyTorchModel`` form."""

    model_name: str
    task: str = "text-generation"
    trust_remote_code: bool | None = None
    from_pretrained_args: dict[str, Any] = attrs.field(factory=dict)
    model_class: str | None = None


@attrs.frozen
class PyTorchModelConfigOld:
    """``input_model.config`` of Olive's older ``PyTorchModel`` form."""

    hf_config: HfConfigOld | None = None
    model_path: str | None = None
    adapter_path: str | None = None
    io_config: dict[str, Any] | str | None = attrs.field(default=None, validator=_io_config)
    model_attributes: dict[str, Any] = attrs.field(factory=dict)
    model_file_format: str | None = None
    model_loader: str | None = None
    model_script: str | None = None
    script_dir: str | None = None
    dummy_inputs_func: str | None = None


@attrs.frozen
class DataConfig:
    """One entry of ``data_configs``: where data comes from and how it is prepared."""

    name: str
    type: str = attrs.field(default="DataContainer", metadata={
        "help": "data container type: DataContainer (Olive's default), HuggingfaceContainer, "
                "DummyDataContainer, RawDataContainer, or one a plugin or the user_script registers"})
    user_script: str | None = attrs.field(default=None, metadata={
        "help": "a Python file registering components (Olive's Registry decorators work)"})
    script_dir: str | None = attrs.field(default=None, metadata={
        "help": "a folder added to sys.path before the user_script is imported"})
    load_dataset_config: dict[str, Any] = attrs.field(factory=dict)
    pre_process_data_config: dict[str, Any] = attrs.field(factory=dict)
    post_process_data_config: dict[str, Any] = attrs.field(factory=dict)
    dataloader_config: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class SearchStrategy:
    """How the engine explores pass options (``engine.search_strategy``)."""

    execution_order: Literal["joint", "pass-by-pass"] = "joint"
    sampler: Literal["sequential", "exhaustive", "random", "tpe"] = attrs.field(
        default="sequential", metadata={ALIASES: ("search_algorithm",),
                                        "help": "sequential (exhaustive), random or tpe"})
    max_samples: int = attrs.field(default=0, metadata={"help": "0: no limit"})
    max_time: float | None = None
    seed: int = 0
    stop_when_goals_met: bool = False
    max_iter: int | None = None
    search_algorithm_config: dict[str, Any] = attrs.field(
        factory=dict, metadata={"help": "Olive's older form: num_samples, seed"})
    include_pass_params: bool = True
    output_model_num: int | None = None


@attrs.frozen
class SharedCacheConfig:
    """``engine.shared_cache`` in its object form (see :mod:`olivine.sharedcache`)."""

    path: str = attrs.field(metadata={"help": "fsspec URL or folder: s3://bucket/prefix, az://..., "
                                              "gs://..., /shared/folder"})
    storage_options: dict[str, Any] = attrs.field(factory=dict, metadata={
        "help": "fsspec options of the location (endpoint_url, key, secret, account_name, ...)"})
    update_shared_cache: bool = attrs.field(default=True, metadata={
        "help": "upload computed steps (false: only download)"})


@attrs.frozen
class OliveCacheConfig:
    """Olive's ``cache_config``: the local cache folder and an Azure Blob shared cache."""

    cache_dir: str | list[str] | None = None
    clean_cache: bool = False
    clean_evaluation_cache: bool = attrs.field(default=False, metadata={
        "help": "olivine keeps no evaluation cache: nothing to clean"})
    account_name: str | None = None
    container_name: str | None = None
    enable_shared_cache: bool = False
    update_shared_cache: bool = True


@attrs.frozen
class EngineConfig:
    """Engine options: in an ``engine`` block or at the top level of the config."""

    search_strategy: SearchStrategy | bool | None = None
    host: str | None = attrs.field(default=None, metadata={"help": "system that runs the passes"})
    target: str | None = attrs.field(default=None, metadata={"help": "system the model is for"})
    evaluator: str | None = attrs.field(default=None, metadata={"help": "name in evaluators"})
    cache_dir: str = attrs.field(default=".olivine-cache", metadata={"help": "step cache folder"})
    output_dir: str = attrs.field(default="olivine-output", metadata={"help": "final model folder"})
    evaluate_input_model: bool = True
    log_severity_level: int = attrs.field(default=1, validator=_log_level,
                                          metadata={"help": "0 verbose .. 4 quiet"})
    no_artifacts: bool = False
    clean_cache: bool = False
    output_name: str | None = None
    shared_cache: SharedCacheConfig | str | None = attrs.field(default=None, metadata={
        "help": "a shared step cache for teams: an fsspec URL or {path, storage_options, "
                "update_shared_cache} (olivine.sharedcache)"})
    enable_shared_cache: bool = attrs.field(default=False, metadata={
        "help": "Olive's: use Olive's public Azure Blob shared cache"})
    cache_config: OliveCacheConfig | None = None


ENGINE_KEYS = tuple(f.name for f in attrs.fields(EngineConfig))
