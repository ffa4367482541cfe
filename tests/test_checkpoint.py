"""Checkpoints: atomic commit + manifest, fallback past corrupt/truncated ones, disk-full safety,
rotation, bit-identical resume of a real learner, and `rrr export`."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from rrr.core.config import LearnerConfig
from rrr.core.train_batch import build_train_batch
from rrr.learner import checkpoint as ckpt
from rrr.learner.packing import shard_batch
from rrr.learner.worker import LearnerWorker
from tests.test_learner import _episodes


def _writer(payload: bytes):
    def write(tmp: Path) -> None:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.bin").write_bytes(payload)
        (tmp / "optim.pt").write_bytes(payload[::-1])

    return write


def test_commit_is_atomic_with_manifest_and_rotation(tmp_path):
    for step in (1, 2, 3, 4):
        path = ckpt.write_checkpoint(
            tmp_path, step, _writer(bytes([step]) * 1000), {"cursor": step * 10}, keep=2
        )
        assert path.name == f"step_{step:08d}"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    assert not list(tmp_path.glob(".tmp-*"))
    latest = ckpt.latest_valid(tmp_path)
    manifest = json.loads((latest / "manifest.json").read_text())
    assert set(manifest["files"]) == {"sub/weights.bin", "optim.pt", "state.json"}
    assert ckpt.read_state(latest)["extra_state"] == {"cursor": 40}


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "no_manifest"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage, caplog):
    ckpt.write_checkpoint(tmp_path, 1, _writer(b"a" * 4096))
    newest = ckpt.write_checkpoint(tmp_path, 2, _writer(b"b" * 4096))
    f = newest / "sub" / "weights.bin"
    if damage == "flip":
        data = bytearray(f.read_bytes())
        data[100] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "truncate":
        f.write_bytes(f.read_bytes()[:1000])
    elif damage == "delete":
        f.unlink()
    else:
        (newest / "manifest.json").unlink()
    with pytest.raises(ckpt.CheckpointError):
        ckpt.verify(newest)
    with caplog.at_level("WARNING"):
        assert ckpt.latest_valid(tmp_path).name == "step_00000001"
    assert "falling back" in caplog.text


def test_crash_mid_write_leaves_no_checkpoint_under_a_real_name(tmp_path):
    ckpt.write_checkpoint(tmp_path, 1, _writer(b"a" * 10))

    def crash(tmp: Path) -> None:
        (tmp / "half").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt.write_checkpoint(tmp_path, 2, crash)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000001"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_disk_full_keeps_the_previous_checkpoint_and_says_why(tmp_path):
    ckpt.write_checkpoint(tmp_path, 1, _writer(b"a" * 10))

    def full(tmp: Path) -> None:
        (tmp / "part").write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ckpt.CheckpointError, match=r"disk full .*step_00000001 is intact"):
        ckpt.write_checkpoint(tmp_path, 2, full, keep=1)
    assert ckpt.latest_valid(tmp_path).name == "step_00000001"
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux /dev/full")
def test_kernel_enospc_from_dev_full_keeps_the_previous_checkpoint(tmp_path):
    """The same with the kernel's own ENOSPC: /dev/full fails every write with it, as a full
    disk does, once the learner's save_torch flushes real tensor bytes."""
    import torch

    ckpt.write_checkpoint(tmp_path, 1, _writer(b"a" * 10))

    def save_to_full_disk(tmp: Path) -> None:
        (tmp / "model.pt").symlink_to("/dev/full")
        ckpt.save_torch({"w": torch.zeros(1 << 16)}, tmp / "model.pt")

    with pytest.raises(ckpt.CheckpointError, match=r"disk full .*step_00000001 is intact"):
        ckpt.write_checkpoint(tmp_path, 2, save_to_full_disk, keep=1)
    assert ckpt.latest_valid(tmp_path).name == "step_00000001"
    assert not list(tmp_path.glob(".tmp-*"))


def _cfg() -> LearnerConfig:
    return LearnerConfig(
        lr=1e-3,
        lr_scheduler="cosine",
        warmup_ratio=0.2,
        max_steps=10,
        gradient_checkpointing=False,
        micro_batch_size=3,
        kl_coef=0.001,
    )


def test_resume_is_bit_identical_and_export_loads(tiny_model_path, tmp_path):
    """save -> drop the learner -> a fresh one resumes: the next two steps' losses and weights
    are bit-identical to an uninterrupted run (optimizer, scheduler and RNG restored)."""
    batches = [build_train_batch(*_episodes(n=8, seed=s), 4) for s in range(4)]
    run = LearnerWorker(tiny_model_path, _cfg())
    for b in batches[:2]:
        run.step(shard_batch(b, 1, 3)[0])
    path = ckpt.write_checkpoint(tmp_path / "checkpoints", 2, run.save_state, {"cursor": 16})
    want = [run.step(shard_batch(b, 1, 3)[0]) for b in batches[2:]]
    want_weights = {k: v.clone() for k, v in run.engine.module.state_dict().items()}
    del run

    resumed = LearnerWorker(tiny_model_path, _cfg())
    assert resumed.load_state(str(ckpt.resolve(tmp_path))) == 2
    got = [resumed.step(shard_batch(b, 1, 3)[0]) for b in batches[2:]]
    for g, w in zip(got, want):
        assert torch.equal(torch.tensor(g["loss"]), torch.tensor(w["loss"]))
        assert g["lr"] == w["lr"]
    for k, v in resumed.engine.module.state_dict().items():
        assert torch.equal(v, want_weights[k]), k

    # `rrr export RUN_DIR --out DIR` -> a Hugging Face directory transformers loads.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rrr.driver.cli import main

    out = tmp_path / "exported"
    assert main(["export", str(tmp_path), "--out", str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    saved = torch.load(path / "optim.pt", weights_only=False)  # exists: torch backend layout
    assert "optimizer" in saved
    policy = LearnerWorker(tiny_model_path, _cfg())
    policy.load_state(str(path))
    for k, v in policy.engine.module.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert AutoTokenizer.from_pretrained(out).chat_template
