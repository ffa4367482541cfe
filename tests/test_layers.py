"""The layering of the packages, read from the code itself (ast, nothing imported):

    rrr.verifiers  <-  rrr.core  <-  rrr.actors, rrr.learner  <-  rrr.driver

One folder per layer, so a picture of the folders is a picture of the layers. The product card
puts actors/, learner/ and verifiers/ at the top of the repository; they are imported only as
rrr.actors, rrr.learner and rrr.verifiers (rrr/__init__.py, pyproject.toml's package-dir).

A module may import its own layer and the layers below it, never one above, and never a sibling
package of its own layer (actors and learner meet only in the driver; what both need, such as
the weight sync's wire protocol in rrr/core/weights/, sits in the core below them). The driver is
the
only code that wires actors and learners together; a core module that reached up into it (as
the trainer once reached into a command module) makes the packages import each other in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Higher number = higher layer; one folder each.
LAYERS: list[tuple[str, int]] = [
    ("rrr.verifiers", 0),
    ("rrr.core", 1),
    ("rrr.actors", 2),
    ("rrr.learner", 2),
    ("rrr.driver", 3),
]
# Where each layer's folder sits, relative to the repository root.
FOLDERS: dict[str, str] = {
    "rrr.verifiers": "verifiers",
    "rrr.core": "rrr/core",
    "rrr.actors": "actors",
    "rrr.learner": "learner",
    "rrr.driver": "rrr/driver",
}


def layer_of(module: str) -> int | None:
    for prefix, level in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return level
    return None  # third-party or stdlib


def package_of(module: str) -> str:
    """The LAYERS entry a module falls under ("rrr.driver", "rrr", "actors", ...)."""
    return next(p for p, _ in LAYERS if module == p or module.startswith(p + "."))


def module_name(path: Path, root: Path) -> str:
    """The dotted name a file is imported as: its layer folder's package, then the rest."""
    rel = path.relative_to(root).with_suffix("")
    for package, folder in FOLDERS.items():
        if rel.parts[: len(Path(folder).parts)] == Path(folder).parts:
            parts = [package, *rel.parts[len(Path(folder).parts) :]]
            break
    else:
        parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an `import` or `from ... import` names, anywhere in the file (function-level
    imports count: they run too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            # `from rrr import driver` names the driver as a member, not in `module`.
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def upward_imports(package_dirs: list[Path], root: Path = ROOT) -> list[str]:
    bad = []
    for directory in package_dirs:
        files = sorted(directory.rglob("*.py"))
        assert files, f"no module to check in {directory}: the layer folders moved?"
        for path in files:
            here = layer_of(module_name(path, root))
            assert here is not None, path
            seen: set[int] = set()  # one report per import statement
            own = package_of(module_name(path, root))
            for lineno, target in imported_modules(path):
                there = layer_of(target)
                sibling = there == here and package_of(target) != own
                if there is not None and (there > here or sibling) and lineno not in seen:
                    seen.add(lineno)
                    bad.append(f"{path.relative_to(root)}:{lineno} imports {target}")
    return bad


def test_no_module_imports_a_layer_above_it_or_a_sibling() -> None:
    dirs = [ROOT / FOLDERS[name] for name, _ in LAYERS]
    checked = sum(len(list(d.rglob("*.py"))) for d in dirs)
    assert checked > 50, f"only {checked} modules found to check"
    bad = upward_imports(dirs)
    assert not bad, "imports that reach up a layer or across to a sibling:\n" + "\n".join(bad)


def test_every_module_sits_in_a_layer_folder() -> None:
    """The folders are the layers: no module beside them under rrr/ (rrr/__init__.py, which
    imports no rrr module, aside); under rrr/ only core/ and driver/; at the top level the card's
    three folders, and no other package."""
    stray = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "rrr").glob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    ]
    # `python -m rrr` is the CLI and nothing else (a Ray job runs it from its working_dir)
    main = [m for _, m in imported_modules(ROOT / "rrr" / "__main__.py")]
    assert main == ["rrr.driver.cli", "rrr.driver.cli.main"]
    assert not stray, f"modules outside the layer folders: {stray}"
    own = [m for _, m in imported_modules(ROOT / "rrr" / "__init__.py") if m.startswith("rrr")]
    assert own == [], f"rrr/__init__.py imports {own}"
    under_rrr = {p.name for p in (ROOT / "rrr").iterdir() if (p / "__init__.py").exists()}
    assert under_rrr == {"core", "driver"}
    top = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert top == {"rrr", "actors", "learner", "verifiers", "tests"}, top


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check is not vacuous: a core module importing the driver is caught, function-level
    and `from rrr import driver` forms included."""
    core = tmp_path / "rrr" / "core"
    core.mkdir(parents=True)  # rrr/core/ -> rrr.core
    (core / "__init__.py").write_text("")
    (core / "x.py").write_text(
        "def f():\n    from rrr.driver.train import train\n    from rrr import driver\n"
    )
    bad = upward_imports([core], root=tmp_path)
    assert bad == [
        "rrr/core/x.py:2 imports rrr.driver.train",
        "rrr/core/x.py:3 imports rrr.driver",
    ]


def test_the_check_sees_a_sibling_import(tmp_path: Path) -> None:
    """rrr.actors and rrr.learner share a layer: one importing the other is caught."""
    for name in ("actors", "learner"):  # top-level folders, as in the repository
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / "actors" / "ext.py").write_text(
        "def f():\n    from rrr.learner.buckets import x\n"
    )
    (tmp_path / "learner" / "w.py").write_text("import rrr.core.grpo\n")  # down: fine
    dirs = [tmp_path / "actors", tmp_path / "learner"]
    bad = upward_imports(dirs, root=tmp_path)
    assert bad == ["actors/ext.py:2 imports rrr.learner.buckets"]


def test_module_names_follow_the_folders() -> None:
    assert module_name(ROOT / "actors" / "vllm_engine.py", ROOT) == "rrr.actors.vllm_engine"
    assert module_name(ROOT / "verifiers" / "__init__.py", ROOT) == "rrr.verifiers"
    assert module_name(ROOT / "rrr" / "core" / "grpo.py", ROOT) == "rrr.core.grpo"


def test_the_check_refuses_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="no module to check"):
        upward_imports([tmp_path], root=tmp_path)
