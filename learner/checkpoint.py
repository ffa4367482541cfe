"""Atomic, verified, rotated checkpoints.

Layout of one checkpoint (a directory `step_00000050` under the run's `checkpoints/`):

    policy/            Hugging Face dir (config, safetensors, tokenizer): what `rrr export`
                       copies and what vLLM / transformers load
    optim.pt           torch backend: optimizer + LR-scheduler state (replicas are identical)
    deepspeed/         DeepSpeed backend: engine.save_checkpoint (per-rank ZeRO shards)
    rng/rank{r}.pt     python / numpy / torch (/ cuda) RNG state of every rank
    state.json         step, backend, world size, and the driver's JSON data cursor
    manifest.json      sha256 and size of every other file; written last

Everything is written into a hidden temporary sibling and renamed into place, so a crash never
leaves a half checkpoint under a real name; `latest_valid` re-hashes against the manifest and
falls back to an older checkpoint (with a warning) when the newest is truncated or corrupt.
A full disk (ENOSPC) removes the partial temp dir, keeps every previous checkpoint, and raises
`CheckpointError` saying so.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rrr.core.errors import RRRError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STATE = "state.json"
_NAME = re.compile(r"^step_(\d{8})$")


class CheckpointError(RRRError, RuntimeError):
    """A checkpoint could not be written or read; the message names the cause."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def begin(root: str | Path, step: int) -> Path:
    """Create and return the temporary directory the checkpoint of `step` is written into."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{checkpoint_name(step)}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def commit(
    tmp: str | Path,
    step: int,
    extra_state: dict[str, Any] | None = None,
    *,
    keep: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write state.json and the manifest into `tmp`, fsync, rename to its final name, prune.

    An existing checkpoint of the same step is replaced only after the new one is complete.
    """
    tmp = Path(tmp)
    root = tmp.parent
    final = root / checkpoint_name(step)
    try:
        state = {
            "step": step,
            "extra_state": extra_state or {},
            "time": time.time(),
            **(meta or {}),
        }
        (tmp / STATE).write_text(json.dumps(state, indent=1))
        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
                files[str(p.relative_to(tmp))] = {
                    "sha256": sha256_file(p),
                    "bytes": p.stat().st_size,
                }
        manifest = tmp / MANIFEST
        with open(manifest, "w") as f:
            json.dump({"step": step, "files": files}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step (e.g. after a resume): swap, never lose both
            old = root / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync_dir(root)
    except BaseException as exc:
        abort(tmp)
        raise _explain(exc, root) from exc
    if keep is not None:
        prune(root, keep)
    return final


def abort(tmp: str | Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def save_torch(obj: Any, path: str | Path) -> None:
    """torch.save through a Python file object: given a path, torch's zip writer reports a full
    disk as "RuntimeError: unexpected pos ..."; through a file object the OS's ENOSPC
    surfaces as an OSError that names it."""
    import torch

    with open(path, "wb") as f:
        torch.save(obj, f)


LOW_SPACE_BYTES = 64 << 20  # below this, a failed write is blamed on the disk


def is_disk_full(exc: BaseException, root: Path) -> bool:
    """ENOSPC anywhere in the exception chain (Ray wraps a learner's error in RayTaskError,
    safetensors in its own type), or a failed write on a filesystem that is out of space."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e):
            return True
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    try:
        return shutil.disk_usage(root).free < LOW_SPACE_BYTES
    except OSError:
        return False


def _explain(exc: BaseException, root: Path) -> BaseException:
    if not isinstance(exc, KeyboardInterrupt) and is_disk_full(exc, root):
        prev = list_checkpoints(root)
        kept = f"the previous checkpoint {prev[-1]} is intact" if prev else "no earlier checkpoint"
        return CheckpointError(
            f"disk full (ENOSPC) while writing a checkpoint under {root}; the partial write was "
            f"removed and {kept}. Free space or lower logging.keep_checkpoints."
        )
    return exc


def write_checkpoint(
    root: str | Path,
    step: int,
    write: Callable[[Path], None],
    extra_state: dict[str, Any] | None = None,
    *,
    keep: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """begin -> write(tmp) -> commit, with cleanup and the ENOSPC message on any failure."""
    tmp = begin(root, step)
    try:
        write(tmp)
    except BaseException as exc:
        abort(tmp)
        raise _explain(exc, Path(root)) from exc
    return commit(tmp, step, extra_state, keep=keep, meta=meta)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Committed checkpoints, oldest first (temp dirs are never listed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def verify(path: str | Path) -> None:
    """Raise CheckpointError unless every file in the manifest is present with its hash."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: manifest missing or unreadable ({exc})") from exc
    for rel, info in manifest["files"].items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"{path}: {rel} is missing")
        if f.stat().st_size != info["bytes"]:
            raise CheckpointError(
                f"{path}: {rel} has {f.stat().st_size} bytes, manifest says {info['bytes']} "
                "(truncated?)"
            )
        if sha256_file(f) != info["sha256"]:
            raise CheckpointError(f"{path}: {rel} fails its sha256 check (corrupt)")


def latest_valid(root: str | Path) -> Path | None:
    """Newest checkpoint that passes `verify`; older ones are tried in turn with a warning."""
    for path in reversed(list_checkpoints(root)):
        try:
            verify(path)
            return path
        except CheckpointError as exc:
            log.warning("skipping checkpoint: %s; falling back to an older one", exc)
    return None


def read_state(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE).read_text())


def prune(root: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints (and stale temp dirs); return the deleted."""
    ckpts = list_checkpoints(root)
    doomed = ckpts[: max(len(ckpts) - keep, 0)] if keep > 0 else []
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    for p in Path(root).glob(".old-*"):
        shutil.rmtree(p, ignore_errors=True)
    return doomed


def resolve(path_or_run: str | Path) -> Path:
    """A checkpoint dir, a `checkpoints/` dir, or a run dir -> the newest valid checkpoint."""
    p = Path(path_or_run)
    if (p / MANIFEST).is_file():
        verify(p)
        return p
    for root in (p, p / "checkpoints"):
        found = latest_valid(root)
        if found is not None:
            return found
    raise CheckpointError(f"no valid checkpoint found in {p} (or {p / 'checkpoints'})")
