"""Export the trained policy of a run (its newest valid checkpoint) or of one checkpoint as a
Hugging Face directory (config, safetensors, tokenizer) that transformers and vLLM load.

  rrr export runs/smoke --out runs/smoke/export
  rrr export runs/smoke/checkpoints/step_00000050 --out /tmp/policy-50
  rrr eval --config configs/smoke-cpu.yaml model.name_or_path=runs/smoke/export

Checksums are verified first; a corrupt newest checkpoint is skipped with a warning (the one
before it is exported). The output appears atomically (written beside it, then renamed).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path

from rrr.core.config import Config

log = logging.getLogger("rrr.export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="run directory, its checkpoints/ directory, or a checkpoint")
    parser.add_argument(
        "--out", required=True, help="output directory (must not exist, or --force)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out directory")


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
    if not (policy / "config.json").is_file():
        print(f"rrr export: {path} has no policy/ directory")
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
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


def _copy_tokenizer(cfg: Config, out: Path) -> None:
    from transformers import AutoTokenizer

    from rrr.core.models import resolve_model

    AutoTokenizer.from_pretrained(resolve_model(cfg.model.name_or_path)).save_pretrained(out)
