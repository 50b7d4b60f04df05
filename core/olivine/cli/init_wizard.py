"""``olivine init``: Olive's wizard. It asks what model and what to do, then prints the command,
writes the workflow config (``--save_config``, through the command's ``--dry_run``), or runs it.

The questions are Olive 0.13's (model type, source, operation, target device and precision,
exporter, quantization algorithm, calibration data, fine-tuning data, output folder and
action); each has a key for non-interactive use: ``--answers FILE`` (JSON or YAML) and
``--answer KEY=VALUE``. Prompts are plain text, or ``questionary``'s when it is installed
and the input is a terminal.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from olivine.cli.init_ask import AnswersAsker, Asker, GoBack, PromptAsker
from olivine.errors import UsageError

DEVICES = [("CPU", "CPUExecutionProvider"), ("GPU (NVIDIA CUDA)", "CUDAExecutionProvider"),
           ("GPU (NvTensorRTRTX)", "NvTensorRTRTXExecutionProvider"),
           ("NPU (Qualcomm QNN)", "QNNExecutionProvider"),
           ("NPU (Intel OpenVINO)", "OpenVINOExecutionProvider"),
           ("NPU (AMD Vitis AI)", "VitisAIExecutionProvider"), ("WebGPU", "WebGpuExecutionProvider")]
PRECISIONS = [("INT4 (smallest size, best for LLMs)", "int4"), ("INT8 (balanced)", "int8"),
              ("FP16 (half precision)", "fp16"), ("FP32 (full precision)", "fp32")]
ALGORITHMS = [("RTN - Fast, no calibration needed", "rtn"),
              ("GPTQ - High quality, requires calibration", "gptq"),
              ("AWQ - Activation-aware, good for LLMs", "awq"),
              ("QuaRot - For QNN/VitisAI deployment", "quarot"),
              ("SpinQuant - Spin quantization", "spinquant")]
CALIBRATED = {"gptq", "awq", "quarot", "spinquant"}
IMPLEMENTATION = {"awq": "awq", "quarot": "quarot", "spinquant": "spinquant"}
EXPORTERS = [("Model Builder (recommended for LLMs)", "model_builder"),
             ("Dynamo Exporter (general purpose)", "dynamo"),
             ("TorchScript Exporter (legacy)", "torchscript")]
OPTIMIZE_EXPORTER = {"model_builder": "model_builder", "dynamo": "dynamo_exporter",
                     "torchscript": "torchscript_exporter"}


def configure(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine init`` (Olive's ``-o`` and olivine's non-interactive ones)."""
    p.add_argument("-o", "--output_path", "--output-path", dest="output_path", default="./olive-output",
                   help="default output folder of the generated command (default ./olive-output)")
    p.add_argument("--answers", default=None, metavar="FILE",
                   help="olivine: answer every question from this JSON or YAML file (keys as in "
                        "docs); nothing is asked")
    p.add_argument("--answer", action="append", default=[], metavar="KEY=VALUE",
                   help="olivine: one answer (repeat); with --answers it overrides the file")
    p.add_argument("--prog", choices=("olivine", "olive"), default="olivine",
                   help="olivine: write the command for olivine (default) or for Olive")
    p.add_argument("--plain", action="store_true",
                   help="olivine: plain prompts even when questionary is installed")
    p.add_argument("--dry_run", "--dry-run", dest="dry_run", action="store_true",
                   help="olivine: print the command whatever the action answer; run nothing")


class Wizard:
    """The questions, in Olive's order; :meth:`run` returns the command's arguments."""

    def __init__(self, ask: Asker, default_output: str) -> None:
        self.ask = ask
        self.default_output = default_output

    # -- stages (a Back answer returns to the previous one) -------------------------------------
    def run(self) -> tuple[list[str], str, str]:
        """``(command args, output folder, action)``."""
        step = 0
        state: dict[str, Any] = {}
        while step < 4:
            try:
                if step == 0:
                    state["type"] = self.ask.select("model_type", "What type of model do you want to "
                                                    "optimize?", [
                        ("PyTorch (HuggingFace or local)", "pytorch"), ("ONNX", "onnx"),
                        ("Diffusers (Stable Diffusion, SDXL, Flux, etc.)", "diffusers")], back=False)
                elif step == 1:
                    state["source"] = getattr(self, f"_source_{state['type']}")()
                elif step == 2:
                    state["cmd"] = getattr(self, f"_flow_{state['type']}")(state["source"])
                    if not state["cmd"]:
                        print("No command generated.")
                        raise GoBack
                else:
                    out = self.ask.text("output_dir", "Output directory:", self.default_output)
                    action = self.ask.select("action", "What would you like to do?", [
                        ("Generate CLI command (copy and run later)", "command"),
                        ("Generate configuration file (JSON, for olivine run)", "config"),
                        ("Run optimization now", "run")])
                    state["out"], state["action"] = out, action
                step += 1
            except GoBack:
                step = max(step - 1, 0)
        cmd = list(state["cmd"])
        if "-o" not in cmd and "--output_path" not in cmd:
            cmd += ["-o", state["out"]]
        return cmd, state["out"], state["action"]

    # -- sources --------------------------------------------------------------------------------
    def _source_pytorch(self) -> list[str]:
        kind = self.ask.select("source_type", "How would you like to specify your model?", [
            ("HuggingFace model name (e.g., meta-llama/Llama-3.1-8B)", "hf"),
            ("Local directory path", "local"), ("AzureML registry path", "azureml"),
            ("PyTorch model with custom script", "script")])
        if kind == "script":
            args = ["--model_script", self.ask.text("model_script", "Path to model script (.py):",
                                                    required=True)]
            script_dir = self.ask.text("script_dir", "Script directory (optional, press Enter to skip):")
            model = self.ask.text("model_path", "Model name or path (optional, press Enter to skip):")
            return [*(["-m", model] if model else []), *args,
                    *(["--script_dir", script_dir] if script_dir else [])]
        return ["-m", self.ask.text("model_path", "Model name or path:", required=True)]

    def _source_onnx(self) -> list[str]:
        return ["-m", self.ask.text("model_path", "Enter ONNX model path (file or directory):",
                                    required=True)]

    def _source_diffusers(self) -> list[str]:
        variant = self.ask.select("variant", "Select diffuser model variant:", [
            ("Auto-detect", "auto"), ("Stable Diffusion (SD 1.x/2.x)", "sd"),
            ("Stable Diffusion XL (SDXL)", "sdxl"), ("Stable Diffusion 3 (SD3)", "sd3"),
            ("Flux", "flux"), ("Sana", "sana")])
        model = self.ask.text("model_path", "Enter model name or path:", required=True)
        return ["-m", model, *([] if variant == "auto" else ["--model_variant", variant])]

    # -- flows ----------------------------------------------------------------------------------
    def _device(self) -> str:
        return self.ask.select("provider", "Select target device:", DEVICES, back=False)

    def _precision(self) -> str:
        return self.ask.select("precision", "Select target precision:", PRECISIONS, back=False)

    def _calibration(self) -> list[str]:
        source = self.ask.select("calibration_source", "Calibration data source:", [
            ("Use default (wikitext-2)", "default"), ("HuggingFace dataset", "hf"),
            ("Local file", "local")], back=False)
        if source == "hf":
            out = ["-d", self.ask.text("data_name", "Dataset name:", "Salesforce/wikitext")]
            subset = self.ask.text("subset", "Subset (optional):", "wikitext-2-raw-v1")
            out += ["--subset", subset] if subset else []
            return [*out, "--split", self.ask.text("split", "Split:", "train"), "--max_samples",
                    self.ask.text("num_samples", "Number of samples:", "128")]
        if source == "local":
            return ["--data_files", self.ask.text("data_files", "Data file path:", required=True)]
        return []

    def _flow_pytorch(self, model: list[str]) -> list[str]:
        op = self.ask.select("operation", "What do you want to do?", [
            ("Optimize model (export to ONNX + quantize + graph optimize)", "optimize"),
            ("Export to ONNX only", "export"), ("Quantize only (PyTorch quantization)", "quantize"),
            ("Fine-tune model (LoRA, QLoRA)", "finetune")])
        if op == "optimize":
            mode = self.ask.select("mode", "How would you like to configure optimization?", [
                ("Auto Mode (recommended) - Automatically select best passes for your target", "auto"),
                ("Custom Mode - Manually pick operations and parameters", "custom")], back=False)
            if mode == "auto":
                return ["optimize", *model, "--provider", self._device(), "--precision",
                        self._precision()]
            return self._custom(model)
        if op == "export":
            return self._export(model, self._export_options())
        if op == "quantize":
            return self._quantize(model, self._quantize_options(prompt="Precision:"))
        return self._finetune(model)

    def _export_options(self) -> dict[str, str]:
        exporter = self.ask.select("exporter", "Select exporter:", EXPORTERS, back=False)
        out = {"exporter": exporter}
        if exporter == "model_builder":
            out["precision"] = self.ask.select("export_precision", "Export precision:", [
                ("fp16", "fp16"), ("fp32", "fp32"), ("bf16", "bf16"), ("int4", "int4")], back=False)
            if out["precision"] == "int4":
                out["block"] = self.ask.select("int4_block_size", "INT4 block size:", [
                    ("32 (recommended)", "32"), ("16", "16"), ("64", "64"), ("128", "128"),
                    ("256", "256")], back=False)
                out["level"] = self.ask.select("int4_accuracy_level", "INT4 accuracy level:", [
                    ("4 (int8, recommended)", "4"), ("1 (fp32)", "1"), ("2 (fp16)", "2"),
                    ("3 (bf16)", "3")], back=False)
        elif exporter == "dynamo":
            out["torch_dtype"] = self.ask.select("torch_dtype", "Torch dtype:", [
                ("fp32", "float32"), ("fp16", "float16")], back=False)
        return out

    @staticmethod
    def _export(model: list[str], opts: dict[str, str]) -> list[str]:
        cmd = ["capture-onnx-graph", *model]
        if opts["exporter"] == "model_builder":
            cmd += ["--use_model_builder", "--precision", opts["precision"]]
            if "block" in opts:
                cmd += ["--int4_block_size", opts["block"]]
            if "level" in opts:
                cmd += ["--int4_accuracy_level", opts["level"]]
        elif opts["exporter"] == "dynamo":
            cmd += ["--torch_dtype", opts["torch_dtype"]]
        return cmd

    def _quantize_options(self, prompt: str = "Quantization precision:") -> dict[str, Any]:
        algorithm = self.ask.select("algorithm", "Select quantization algorithm:", ALGORITHMS,
                                    back=False)
        precision = self.ask.select("quant_precision", prompt, [
            ("int4", "int4"), ("uint4", "uint4"), ("int8", "int8")], back=False)
        calib = self._calibration() if algorithm in CALIBRATED else []
        return {"algorithm": algorithm, "precision": precision, "calibration": calib}

    @staticmethod
    def _quantize(model: list[str], opts: dict[str, Any]) -> list[str]:
        cmd = ["quantize", *model, "--algorithm", opts["algorithm"], "--precision", opts["precision"]]
        if opts["algorithm"] in IMPLEMENTATION:
            cmd += ["--implementation", IMPLEMENTATION[opts["algorithm"]]]
        return cmd + opts["calibration"]

    def _custom(self, model: list[str]) -> list[str]:
        ops = self.ask.checkbox("operations", "Select operations to perform:", [
            ("Export to ONNX", "export"), ("Quantize", "quantize"),
            ("Graph Optimization", "graph_opt")], checked=("export", "quantize"))
        if not ops:
            print("No operations selected.")
            return []
        export = self._export_options() if "export" in ops else None
        quant = self._quantize_options() if "quantize" in ops else None
        if (export and quant) or (export and "graph_opt" in ops):
            precision = quant["precision"] if quant else "fp32"
            return ["optimize", *model, "--provider", self._device(), "--precision", precision,
                    "--exporter", OPTIMIZE_EXPORTER[export["exporter"]]]
        if quant and "graph_opt" in ops:
            return ["optimize", *model, "--provider", self._device(), "--precision", quant["precision"]]
        if export:
            return self._export(model, export)
        if quant:
            return self._quantize(model, quant)
        return ["optimize", *model, "--provider", self._device(), "--precision", "fp32"]

    def _finetune(self, model: list[str]) -> list[str]:
        method = self.ask.select("method", "Select fine-tuning method:", [
            ("LoRA (recommended)", "lora"), ("QLoRA (quantized, saves GPU memory)", "qlora")],
            back=False)
        r = self.ask.select("lora_r", "LoRA rank (r):", [("64 (default)", "64"), ("4", "4"),
                                                         ("8", "8"), ("16", "16"), ("32", "32")],
                            back=False)
        cmd = ["finetune", *model, "--method", method, "--lora_r", r, "--lora_alpha",
               self.ask.text("lora_alpha", "LoRA alpha:", "16")]
        data = self.ask.select("data_source", "Training dataset:", [
            ("HuggingFace dataset", "hf"), ("Local file", "local")], back=False)
        if data == "hf":
            cmd += ["-d", self.ask.text("data_name", "Dataset name:", "tatsu-lab/alpaca"),
                    "--train_split", self.ask.text("train_split", "Train split:", "train")]
            eval_split = self.ask.text("eval_split", "Eval split (optional, press Enter to skip):")
            cmd += ["--eval_split", eval_split] if eval_split else []
        else:
            cmd += ["-d", "nouse", "--data_files",
                    self.ask.text("data_files", "Path to data file(s):", required=True)]
        mode = self.ask.select("text_mode", "How to construct training text?", [
            ("Single text field (specify column name)", "text_field"),
            ("Text template (e.g., '### Question: {prompt} \\n### Answer: {response}')", "template"),
            ("Use chat template", "chat_template")], back=False)
        if mode == "text_field":
            cmd += ["--text_field", self.ask.text("text_field", "Text field name:", "text")]
        elif mode == "template":
            cmd += ["--text_template", self.ask.text("text_template", "Text template:", required=True)]
        else:
            cmd += ["--use_chat_template"]
        cmd += ["--max_seq_len", self.ask.text("max_seq_len", "Max sequence length:", "1024"),
                "--max_samples", self.ask.text("max_samples", "Max training samples:", "256")]
        return [*cmd, "--torch_dtype", self.ask.select("torch_dtype", "Torch dtype for training:", [
            ("bfloat16 (recommended)", "bfloat16"), ("float16", "float16"), ("float32", "float32")],
            back=False)]

    def _flow_onnx(self, model: list[str]) -> list[str]:
        op = self.ask.select("operation", "What do you want to do?", [
            ("Optimize model (auto-select best passes for target hardware)", "optimize"),
            ("Quantize", "quantize"), ("Graph optimization", "graph_opt"),
            ("Convert precision (FP32 \u2192 FP16)", "convert_precision"),
            ("Tune session parameters", "tune_session")])
        if op == "optimize":
            return ["optimize", *model, "--provider", self._device(), "--precision", self._precision()]
        if op == "graph_opt":
            return ["optimize", *model, "--precision", "fp32"]
        if op == "convert_precision":
            return ["run-pass", "--pass-name", "OnnxFloatToFloat16", *model]
        if op == "tune_session":
            return self._tune(model)
        kind = self.ask.select("quant_type", "Select quantization type:", [
            ("Static Quantization (INT8) - requires calibration data", "static"),
            ("Dynamic Quantization (INT8) - no calibration needed", "dynamic"),
            ("Block-wise RTN (INT4) - no calibration needed", "blockwise_rtn"),
            ("HQQ Quantization (INT4) - no calibration needed", "hqq"),
            ("BnB Quantization (FP4/NF4) - no calibration needed", "bnb")], back=False)
        precision, impl = {"static": ("int8", "ort"), "dynamic": ("int8", "ort"),
                           "blockwise_rtn": ("int4", "ort"), "hqq": ("int4", "ort"),
                           "bnb": ("nf4", "bnb")}[kind]
        cmd = ["quantize", *model, "--precision", precision, "--implementation", impl]
        if kind == "dynamic":
            cmd += ["--algorithm", "rtn"]
        return cmd + (self._calibration() if kind == "static" else [])

    def _tune(self, model: list[str]) -> list[str]:
        device = self.ask.select("device", "Select target device:", [("CPU", "cpu"), ("GPU", "gpu")],
                                 back=False)
        eps = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
        picked = self.ask.checkbox("providers", "Select execution providers:", [(e, e) for e in eps],
                                   checked=[eps[0] if device == "cpu" else eps[1]])
        cmd = ["tune-session-params", *model, "--device", device]
        cmd += ["--providers_list", *picked] if picked else []
        cores = self.ask.text("cpu_cores", "CPU cores for thread tuning (optional, press Enter to skip):")
        cmd += ["--cpu_cores", cores] if cores else []
        if self.ask.confirm("io_bind", "Enable IO binding?", False):
            cmd.append("--io_bind")
        if self.ask.confirm("enable_cuda_graph", "Enable CUDA graph?", False):
            cmd.append("--enable_cuda_graph")
        return cmd

    def _flow_diffusers(self, model: list[str]) -> list[str]:
        op = self.ask.select("operation", "What do you want to do?", [
            ("Export to ONNX (for deployment with ONNX Runtime)", "export"),
            ("LoRA Training (fine-tune on custom images)", "lora")])
        if op == "export":
            dtype = self.ask.select("torch_dtype", "Torch dtype:", [("float16", "float16"),
                                                                    ("float32", "float32")], back=False)
            return ["capture-onnx-graph", *model[:2], "--torch_dtype", dtype, *model[2:]]
        r = self.ask.select("lora_r", "LoRA rank (r):", [("16 (recommended)", "16"), ("4", "4"),
                                                         ("8", "8"), ("32", "32"), ("64", "64")],
                            back=False)
        cmd = ["diffusion-lora", *model, "-r", r,
               "--alpha", self.ask.text("lora_alpha", "LoRA alpha (default = same as rank):", r),
               "--lora_dropout", self.ask.text("lora_dropout", "LoRA dropout:", "0.0")]
        if self.ask.select("data_source", "Training data source:", [
                ("Local image folder", "local"), ("HuggingFace dataset", "hf")], back=False) == "local":
            cmd += ["-d", self.ask.text("data_dir", "Path to image folder:", required=True)]
        else:
            cmd += ["--data_name", self.ask.text("data_name", "Dataset name:", required=True),
                    "--data_split", self.ask.text("data_split", "Split:", "train"),
                    "--image_column", self.ask.text("image_column", "Image column name:", "image")]
            caption = self.ask.text("caption_column", "Caption column name (optional):")
            cmd += ["--caption_column", caption] if caption else []
        steps = self.ask.select("max_train_steps", "Max training steps:", [
            ("1000 (recommended)", "1000"), ("500 (quick)", "500"), ("2000 (thorough)", "2000"),
            ("Custom", "custom")], back=False)
        if steps == "custom":
            steps = self.ask.text("max_train_steps_custom", "Enter max training steps:", required=True)
        cmd += ["--max_train_steps", steps,
                "--learning_rate", self.ask.text("learning_rate", "Learning rate:", "1e-4")]
        if self.ask.confirm("merge_lora", "Merge LoRA into base model?", False):
            cmd.append("--merge_lora")
        return cmd


def read_answers(args: argparse.Namespace) -> dict[str, Any] | None:
    """The answers of ``--answers`` and ``--answer`` (``None``: ask interactively)."""
    if args.answers is None and not args.answer:
        return None
    answers: dict[str, Any] = {}
    if args.answers is not None:
        path = Path(args.answers)
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"--answers {args.answers!r}: cannot read it: {exc.strerror or exc}") \
                from None
        try:
            import yaml

            data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        except Exception as exc:
            raise UsageError(f"--answers {args.answers!r}: not valid JSON or YAML: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"--answers {args.answers!r}: expected an object of answers by key")
        answers.update(data)
    for pair in args.answer:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--answer: expected KEY=VALUE, got {pair!r}")
        answers[key] = value
    return answers


def _asker(args: argparse.Namespace, answers: dict[str, Any] | None) -> Asker:
    if answers is not None:
        return AnswersAsker(answers)
    if not args.plain and sys.stdin.isatty():
        try:
            from olivine.cli.init_ask import QuestionaryAsker

            return QuestionaryAsker()
        except ImportError:
            pass
    return PromptAsker()


def cmd_init(args: argparse.Namespace) -> int:
    """``olivine init``."""
    answers = read_answers(args)
    ask = _asker(args, answers)
    if answers is None:
        print("\nWelcome to olivine init! This wizard will help you optimize your model.\n")
    try:
        cmd, out, action = Wizard(ask, args.output_path).run()
    except EOFError:
        raise UsageError("init: the input ended before every question was answered (give "
                         "answers with --answers FILE to run without prompts)") from None
    line = shlex.join([args.prog, *cmd])
    if args.dry_run or action == "command":
        print(f"\nGenerated command:\n\n  {line}\n")
        run_now = not args.dry_run and ask.confirm("run_now", "Run this command now?", False)
        action = "run" if run_now else "done"
    if isinstance(ask, AnswersAsker) and ask.unused():
        raise UsageError(f"--answers: {', '.join(ask.unused())}: not asked on these answers' "
                         "path through the wizard (a typo, or an answer for another choice?)")
    if action == "done":
        return 0
    runner = [sys.executable, "-m", "olivine"] if args.prog == "olivine" else ["olive"]
    if action == "config":
        config = Path(out) / "config.json"
        save = ["--save_config", str(config)] if args.prog == "olivine" else ["--save_config_file"]
        print("\nGenerating configuration file...\n")
        code = subprocess.run([*runner, *cmd, *save, "--dry_run"], check=False).returncode
        if code == 0 and config.exists():
            print(f"\nYou can run it later with:\n  {args.prog} run --config {config}\n")
        return code
    print(f"\nRunning: {line}\n")
    return subprocess.run([*runner, *cmd], check=False).returncode
