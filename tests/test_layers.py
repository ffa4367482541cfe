"""The layering of the packages, read from the code itself (ast, nothing imported):

    rrr.verifiers  <-  rrr.core  <-  rrr.actors, rrr.learner  <-  rrr.driver

One folder under rrr/ per layer, so a picture of the folders is a picture of the layers.

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

ROOT = Path(__file__).resolve().parents[1]

# Higher number = higher layer; one folder under rrr/ each.
LAYERS: list[tuple[str, int]] = [
    ("rrr.verifiers", 0),
    ("rrr.core", 1),
    ("rrr.actors", 2),
    ("rrr.learner", 2),
    ("rrr.driver", 3),
]


def layer_of(module: str) -> int | None:
    for prefix, level in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return level
    return None  # third-party or stdlib


def package_of(module: str) -> str:
    """The LAYERS entry a module falls under ("rrr.driver", "rrr", "actors", ...)."""
    return next(p for p, _ in LAYERS if module == p or module.startswith(p + "."))


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
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
        for path in sorted(directory.rglob("*.py")):
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
    dirs = [ROOT / "rrr" / name.split(".")[1] for name, _ in LAYERS]
    bad = upward_imports(dirs)
    assert not bad, "imports that reach up a layer or across to a sibling:\n" + "\n".join(bad)


def test_every_module_sits_in_a_layer_folder() -> None:
    """The folders are the layers: no module beside them under rrr/ (rrr/__init__.py, which
    imports nothing, aside), and no top-level package other than rrr."""
    stray = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "rrr").glob("*.py")
        if p.name != "__init__.py"
    ]
    assert not stray, f"modules outside the layer folders: {stray}"
    assert imported_modules(ROOT / "rrr" / "__init__.py") == []
    folders = {p.name for p in (ROOT / "rrr").iterdir() if (p / "__init__.py").exists()}
    assert folders == {name.split(".")[1] for name, _ in LAYERS}


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check is not vacuous: a core module importing the driver is caught, function-level
    and `from rrr import driver` forms included."""
    core = tmp_path / "rrr" / "core"
    core.mkdir(parents=True)
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
    for name in ("actors", "learner"):
        (tmp_path / "rrr" / name).mkdir(parents=True)
        (tmp_path / "rrr" / name / "__init__.py").write_text("")
    (tmp_path / "rrr" / "actors" / "ext.py").write_text(
        "def f():\n    from rrr.learner.buckets import x\n"
    )
    (tmp_path / "rrr" / "learner" / "w.py").write_text("import rrr.core.grpo\n")  # down: fine
    dirs = [tmp_path / "rrr" / "actors", tmp_path / "rrr" / "learner"]
    bad = upward_imports(dirs, root=tmp_path)
    assert bad == ["rrr/actors/ext.py:2 imports rrr.learner.buckets"]
