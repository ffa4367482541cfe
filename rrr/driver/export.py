"""Export the trained policy of a run (its newest valid checkpoint) or of one checkpoint as a
Hugging Face directory (config, safetensors, tokenizer) that transformers and vLLM load.

  rrr export runs/smoke --out runs/smoke/export
  rrr export runs/smoke/checkpoints/step_00000050 --out /tmp/policy-50
  rrr eval --config configs/smoke-cpu.yaml model.name_or_path=runs/smoke/export

A LoRA run's checkpoints hold the adapter alone; its export is the base model with the adapter
merged in (any tool loads it), or with --adapter the adapter directory itself (megabytes; vLLM
serves it on the base, and `rrr eval model.name_or_path=ADAPTER_DIR` does so).

Checksums are verified first; a corrupt newest checkpoint is skipped with a warning (the one
before it is exported). The output appears atomically (written beside it, then renamed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

from rrr.core.config import Config
from rrr.core.lora import is_adapter_dir

log = logging.getLogger("rrr.export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="run directory, its checkpoints/ directory, or a checkpoint")
    parser.add_argument(
        "--out", required=True, help="output directory (must not exist, or --force)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out directory")
    parser.add_argument(
        "--adapter", action="store_true",
        help="a LoRA run: write the adapter alone (adapter_config.json, adapter_model."
        "safetensors, tokenizer) instead of the base model with the adapter merged in",
    )  # fmt: skip


def run(args: argparse.Namespace, cfg: Config) -> int:
    from rrr.learner import checkpoint as ckpt

    try:
        path = ckpt.resolve(args.source)
    except ckpt.CheckpointError as exc:
        print(f"rrr export: {exc}")
        return 1
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"rrr export: {out} exists (use --force to replace it)")
        return 1
    policy = path / "policy"
    adapter = is_adapter_dir(policy)
    if not adapter and not (policy / "config.json").is_file():
        print(f"rrr export: {path} has no policy/ directory")
        return 1
    if args.adapter and not adapter:
        print(f"rrr export: --adapter: {path} holds full weights (its run had no learner.lora)")
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if adapter and not args.adapter:
            _merge(policy, tmp, cfg)
        else:
            shutil.copytree(policy, tmp, dirs_exist_ok=True)
        if not any(tmp.glob("tokenizer*")):  # older checkpoints: take the configured model's
            _copy_tokenizer(cfg, tmp)
        state = ckpt.read_state(path)
        (tmp / "rrr_export.json").write_text(
            json.dumps(
                {
                    "checkpoint": str(path.resolve()),
                    "step": state.get("step"),
                    "backend": state.get("backend"),
                    "lora": "adapter" if args.adapter else "merged" if adapter else None,
                },
                indent=1,
            )
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"exported step {state.get('step')} from {path} to {out}")
    return 0


def _merge(adapter_dir: Path, out: Path, cfg: Config) -> None:
    """The adapter's base model (as its adapter_config.json names it) with the adapter folded
    in, and the checkpoint's tokenizer."""
    from transformers import AutoTokenizer

    from rrr.core.lora import read_adapter_dir
    from rrr.core.models import resolve_model
    from rrr.learner.lora import merge_adapter

    base, _ = read_adapter_dir(adapter_dir)
    merge_adapter(adapter_dir, resolve_model(base), out, cfg.model.trust_remote_code)
    with contextlib.suppress(OSError, ValueError):  # no tokenizer saved: _copy_tokenizer
        AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(out)


def _copy_tokenizer(cfg: Config, out: Path) -> None:
    from transformers import AutoTokenizer

    from rrr.core.models import resolve_model

    AutoTokenizer.from_pretrained(resolve_model(cfg.model.name_or_path)).save_pretrained(out)
