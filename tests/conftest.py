"""Session fixtures (Ray, models and the vLLM rollout worker start ONCE per test session) and
the test tiers.

CI has 2 cores; starting a vLLM engine costs ~30-40 s there, so every real-component test
shares the same engine (a tiny random Llama with SmolLM2's tokenizer for plumbing; the
embedded SmolLM2-135M only where its behaviour matters).

Tiers: every test gets exactly one of three markers, from what it uses (`tier_of`):

  stack  starts Ray, a vLLM engine or an `rrr` run: it requests a fixture in STACK_FIXTURES
         (directly or through another fixture), or is marked `stack` by hand (a test that
         starts its own Ray head or `rrr train` process, which no fixture shows);
  model  builds, loads or runs model weights in this process: a fixture in MODEL_FIXTURES,
         or marked `model` by hand (a test that loads a model itself);
  unit   everything else: pure logic. A tokenizer is data here: `smollm2_path` (the embedded
         model's directory, converted once per machine) serves unit tests its tokenizer and
         chat template.

`slow` (what `-m "not slow"` leaves out) is added to every model and stack test; a unit test
may carry it by hand when it alone takes tens of seconds. A unit test that starts Ray or
builds a model anyway fails (`_unit_guard`), so the tiers stay true as tests change.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "data"  # the bundled samples (data/SOURCES.md); never outside the repo

# Converted models and HF caches stay out of the user's home during tests only when asked.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


TIERS = ("unit", "model", "stack")
# Fixtures that start Ray or a vLLM engine (a fixture that requests one, such as a test
# module's actor fleet, counts too: pytest lists the whole closure in item.fixturenames).
STACK_FIXTURES = frozenset({"ray_local", "rollout_worker"})
# Fixtures that build or load model weights in this process.
MODEL_FIXTURES = frozenset({"tiny_model_path", "tied_model_path", "odd_vocab_model"})


def tier_of(item: pytest.Item) -> str:
    """The one tier of a test: the highest its fixtures or its own tier marks say."""
    names = set(getattr(item, "fixturenames", ()))
    marked = {m.name for m in item.iter_markers() if m.name in TIERS}
    if names & STACK_FIXTURES or "stack" in marked:
        return "stack"
    if names & MODEL_FIXTURES or "model" in marked:
        return "model"
    return "unit"


# Every collected test as {"id", "fixtures", "marks"}, before `-m` or `-k` deselect any
# (tests/test_tiers.py checks the rule on it).
COLLECTED = pytest.StashKey[list[dict]]()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the tiers are what it selects by
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item)
        item.stash[_TIER] = tier
        if item.get_closest_marker(tier) is None:
            item.add_marker(tier)
        if tier != "unit" and item.get_closest_marker("slow") is None:
            item.add_marker("slow")
    config.stash[COLLECTED] = [
        {"id": item.nodeid, "fixtures": sorted(getattr(item, "fixturenames", ())),
         "marks": sorted({m.name for m in item.iter_markers()})}
        for item in items
    ]  # fmt: skip
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


_TIER = pytest.StashKey[str]()


class TierError(AssertionError):
    pass


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _unit_guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _unit_guard(item):
        return (yield)


# What a unit test may not do, as (module, attribute): watched only once the module is imported,
# so the guard imports nothing itself (a test that imports one of them inside its own body is
# caught by the next unit test, or when `-m unit` runs it after one that imported it).
_WATCHED = [
    ("ray", "init", "starts Ray"),
    ("transformers.modeling_utils", "PreTrainedModel.__init__", "builds a model"),
    ("vllm.entrypoints.llm", "LLM.__init__", "starts a vLLM engine"),
    ("deepspeed", "initialize", "starts DeepSpeed"),
]
_models_allowed = [0]  # > 0 inside `models_allowed()`


@contextlib.contextmanager
def models_allowed():
    """Lift the unit guard for a fixture that prepares data once, such as `smollm2_path`
    converting the embedded model the first time a machine needs its tokenizer."""
    _models_allowed[0] += 1
    try:
        yield
    finally:
        _models_allowed[0] -= 1


@contextlib.contextmanager
def _unit_guard(item: pytest.Item):
    """While a unit test is set up and runs, what _WATCHED lists raises TierError."""
    if item.stash.get(_TIER, "unit") != "unit":
        yield
        return
    with contextlib.ExitStack() as stack:
        for module_name, attribute, what in _WATCHED:
            owner = sys.modules.get(module_name)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part, None)
            original = None if owner is None else getattr(owner, name, None)
            if original is not None:
                stack.enter_context(_patched(owner, name, _refusal(item.nodeid, what, original)))
        yield


def _refusal(nodeid: str, what: str, original):
    def refuse(*args, **kwargs):
        if _models_allowed[0]:
            return original(*args, **kwargs)
        raise TierError(
            f"{nodeid} is in the unit tier but {what}: request the fixture that provides it "
            "or mark the test `model` / `stack` (tests/conftest.py, tier_of)"
        )

    return refuse


@contextlib.contextmanager
def _patched(owner: object, name: str, value: object):
    missing = object()
    saved = vars(owner).get(name, missing)  # a class's own attribute, not an inherited one
    setattr(owner, name, value)
    try:
        yield
    finally:
        if saved is missing:
            delattr(owner, name)
        else:
            setattr(owner, name, saved)


@pytest.fixture(scope="session")
def sample_data() -> Path:
    if not SAMPLE_DATA.is_dir():
        pytest.fail(f"bundled data not found at {SAMPLE_DATA}: the checkout is incomplete")
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from rrr.core.models import resolve_model

    with models_allowed():  # converted once per machine; unit tests read only its tokenizer
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
    from rrr.driver.stack import shared_stacks

    # End-to-end runs in this session (`rrr train/eval/build-failures/calibrate` through
    # main()) share their rollout workers and verifiers per configuration: a finished run's
    # stack is reset to the base model and serves the next run with the same settings
    # (rrr/driver/stack.py, StackPool; tests/test_stack_pool.py checks the reset is exact).
    with shared_stacks():
        yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def rollout_worker(ray_local, tiny_model_path: str):
    """One real vLLM CPU engine inside a real Ray actor, shared by the whole session.

    Its engine core runs in the actor's process (tests/helpers.py, IN_PROCESS)."""
    from rrr.actors.rollout_worker import RolloutWorker
    from tests.helpers import IN_PROCESS

    worker = RolloutWorker.options(num_cpus=1).remote(
        model_path=tiny_model_path, max_model_len=2048, kv_cache_gib=0.25, seed=0,
        in_process=IN_PROCESS,
    )  # fmt: skip
    ray_local.get(worker.ping.remote())
    yield worker
    ray_local.kill(worker)


# ------------------------------------------------------------------ two workers
def pytest_configure(config: pytest.Config) -> None:
    """A pytest-xdist worker runs on its own share of the CPUs (tests/scheduling.py,
    pin_worker), so its engines and learners size their threads to that share."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # set in a worker; there xdist is installed
        from tests.scheduling import pin_worker

        pin_worker()


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which `pytest -n 2` loads
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadfile` with the units and order of tests/scheduling.py."""
    if config.getoption("dist") != "loadfile":
        return None
    from tests.scheduling import ModuleUnitScheduling

    return ModuleUnitScheduling(config, log)


# ------------------------------------------------------------------ time per test module
# The suite's budget (issue 31) is read per module: each module's setup + call + teardown
# seconds, printed at the end of every run beside pytest's slowest tests.
_MODULE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = report.nodeid.split("::", 1)[0]
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _MODULE_SECONDS:
        return
    total = sum(_MODULE_SECONDS.values())
    terminalreporter.write_sep("=", f"seconds per test module ({total:.0f} s in all)")
    for module, s in sorted(_MODULE_SECONDS.items(), key=lambda kv: -kv[1]):
        if s >= 1:
            terminalreporter.write_line(f"{s:8.1f}s  {module}")
