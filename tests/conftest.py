"""Session fixtures: Ray, models and the vLLM rollout worker start ONCE per test session.

CI has 2 cores; starting a vLLM engine costs ~30-40 s there, so every real-component test
shares the same engine (a tiny random Llama with SmolLM2's tokenizer for plumbing; the
embedded SmolLM2-135M only where its behaviour matters).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "data"  # the bundled samples (data/SOURCES.md); never outside the repo

# Converted models and HF caches stay out of the user's home during tests only when asked.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (a CPU twin covers the same logic)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_data() -> Path:
    if not SAMPLE_DATA.is_dir():
        pytest.fail(f"bundled data not found at {SAMPLE_DATA}: the checkout is incomplete")
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from rrr.models import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, smollm2_path: str) -> str:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template (seeded)."""
    from tests.helpers import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-random"), smollm2_path)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    if not ray.is_initialized():
        # Logical CPUs above the 2 physical ones let rollout, learner and verifier actors
        # coexist; they mostly wait on each other.
        # address="local": never join a cluster some other process left behind.
        ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def rollout_worker(ray_local, tiny_model_path: str):
    """One real vLLM CPU engine inside a real Ray actor, shared by the whole session."""
    from actors.rollout_worker import RolloutWorker

    worker = RolloutWorker.options(num_cpus=1).remote(
        model_path=tiny_model_path, max_model_len=2048, kv_cache_gib=1, seed=0
    )
    ray_local.get(worker.ping.remote())
    yield worker
    ray_local.kill(worker)
