"""rrr: Reflect, Retry, Reward on Ray, vLLM and DeepSpeed.

One import name, five layers, one folder each; a module imports its own folder and the folders
below it, never one above and never a sibling (tests/test_layers.py):

    rrr.verifiers  verifiers/   the judges: model output -> Verdict (pure stdlib, hostile input)
    rrr.core       rrr/core/    episodes, GRPO maths, configs, tasks, metrics, weights protocol
    rrr.actors     actors/      Ray actors around vLLM (rollout workers) and the verifier pool
    rrr.learner    learner/     Ray actors around DeepSpeed/torch (learner ranks), checkpoints
    rrr.driver     rrr/driver/  the `rrr` command line and the training loop, the only code that
                                wires actors and learners together

The product card puts `actors/`, `learner/` and `verifiers/` at the top of the repository, yet
the only import name is `rrr`. An installed rrr (wheel or `pip install -e .`) maps them under
`rrr` through setuptools' `package-dir` (pyproject.toml). Code run from a source tree that is
not installed as such (a Ray job's unpacked working_dir, a vLLM worker process, pytest from the
root, a second checkout beside an installed one) is served by the finder below: it answers the
three names `rrr.actors`, `rrr.learner`, `rrr.verifiers` from this file's own repository, first
on `sys.meta_path`, so a copy never mixes with another checkout's install. Nothing else is
answered, and an installed wheel (whose `rrr/actors/` sits inside the package) never installs it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

_TOP_LEVEL = ("actors", "learner", "verifiers")  # imported as rrr.<name>; never on their own


class _SourceTreeFinder:
    """Finds rrr.actors / rrr.learner / rrr.verifiers in the repository root `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        prefix, _, name = fullname.partition(".")
        if prefix != __name__ or name not in _TOP_LEVEL:
            return None
        folder = self.root / name
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def _install_source_tree_finder() -> None:
    here = Path(__file__).resolve().parent
    root = here.parent
    if (here / "actors" / "__init__.py").is_file():  # an installed wheel: they sit inside rrr/
        return
    if not all((root / name / "__init__.py").is_file() for name in _TOP_LEVEL):
        return
    # One finder per process, for this copy's root: a reload or a second copy replaces it.
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _SourceTreeFinder)]
    sys.meta_path.insert(0, _SourceTreeFinder(root))


_install_source_tree_finder()
