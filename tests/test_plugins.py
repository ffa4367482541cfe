"""Tasks as plugins: entry-point discovery (group `rrr.tasks`), `data.task=pkg.module:Class`,
the protocol check, pickling, `rrr tasks`, and a real third-party package installed with pip
into a temporary directory (no network: a local directory, no dependencies, no build isolation).
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rrr.core.config import ConfigError, load_config
from rrr.core.tasks import ApiGenTask, CountdownTask, TaskNotFound, get_task, installed_tasks
from rrr.core.tasks.base import check_task_class
from rrr.core.tasks.registry import task_class
from rrr.driver.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rrr-reverse-task"


def test_rrrs_own_tasks_come_from_entry_points() -> None:
    tasks = installed_tasks()
    for name, cls in (("countdown", CountdownTask), ("apigen", ApiGenTask)):
        assert tasks[name].distribution == "rrr"
        assert tasks[name].target == f"{cls.__module__}:{cls.__name__}"
        assert task_class(name) is cls
    assert tasks["code"].target == "rrr.core.tasks.code:CodeTask"


def test_a_class_path_works_without_any_registration(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_tasks.py").write_text(textwrap.dedent("""
        from rrr.core.tasks.countdown import CountdownTask

        class Harder(CountdownTask):
            name = "harder"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    task = get_task("my_tasks:Harder", "qwen")
    assert task.name == "harder" and pickle.loads(pickle.dumps(task)).name == "harder"
    assert load_config(None, ["data.task=my_tasks:Harder"]).data.task == "my_tasks:Harder"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("chess", "data.task: unknown task 'chess'; installed: "),
        ("not a:target", "data.task: 'not a:target' is not of the form pkg.module:Class"),
    ],
)
def test_bad_task_names_the_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        load_config(None, [f"data.task={value}"])


def test_a_class_that_will_not_load_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "broken_tasks.py").write_text(textwrap.dedent("""
        import threading
        from rrr.core.tasks.countdown import CountdownTask

        class NoName:
            error_categories = ("x",)

        class Unpicklable(CountdownTask):
            name = "unpicklable"
            def __init__(self, family="qwen"):
                super().__init__(family)
                self.lock = threading.Lock()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TaskNotFound, match="cannot import 'nope'"):
        get_task("nope:Task")
    with pytest.raises(TaskNotFound, match="has no 'Missing'"):
        get_task("broken_tasks:Missing")
    with pytest.raises(TaskNotFound, match="`name` must be a non-empty str"):
        get_task("broken_tasks:NoName")
    with pytest.raises(TaskNotFound, match="does not pickle"):
        get_task("broken_tasks:Unpicklable")


def test_protocol_check_names_what_is_missing() -> None:
    class Half:
        name = "half"
        error_categories = ("wrong",)

        def verify(self, row, response): ...

    problem = check_task_class(Half)
    assert problem is not None and "validate_row" in problem and "first_messages" in problem
    assert check_task_class(CountdownTask) is None


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed by pip, as a user would, into a directory of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(example_copy(tmp_path_factory))],
        check=True, capture_output=True,
    )  # fmt: skip
    return target


def example_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's source in a temporary directory: building it writes build/ and
    *.egg-info/ beside its pyproject.toml, which must not land in the checkout."""
    copy = tmp_path_factory.mktemp("example") / EXAMPLE.name
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    return copy


def test_an_installed_plugin_is_listed_and_builds(installed_example: Path, monkeypatch,
                                                  capsys) -> None:  # fmt: skip
    assert "reverse" not in installed_tasks()
    monkeypatch.syspath_prepend(str(installed_example))
    info = installed_tasks()["reverse"]
    assert (info.target, info.distribution) == ("rrr_reverse_task:ReverseTask", "rrr-reverse-task")
    task = get_task("reverse", "qwen")
    row = task.validate_row({"word": "Stone"})
    assert task.verify(row, "so \\boxed{enots}").correct
    assert task.verify(row, "\\boxed{stone}").error == "wrong_answer"
    assert task.verify(row, "enots").error == "format"
    assert load_config(None, ["data.task=reverse"]).data.task == "reverse"
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "reverse  rrr_reverse_task:ReverseTask  [rrr-reverse-task]" in out
    assert "error categories: format, wrong_answer" in out
    assert "countdown  rrr.core.tasks.countdown:CountdownTask  [rrr]" in out

    from rrr.core.tasks.loading import load_rows

    assert len(load_rows(task, "reverse-words").rows) == 32  # the plugin's own source
