"""The layout rules of design.md §1 that, once broken, break imports far away."""

import os
import platform
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_platform_is_the_standard_library_module():
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(platform.__file__).resolve().parent == stdlib
    assert isinstance(platform.python_version(), str)


def test_the_platform_folder_is_not_a_python_package():
    assert (ROOT / "platform").is_dir()
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_the_readme_names_the_two_commands_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "platform/run.sh" in readme
    assert "platform/test.sh" in readme
    assert "platform/test.sh" in ci


def test_the_web_process_never_imports_torch_or_the_export_driver():
    """Every URL's view module and the task modules load without torch: the web process
    queues training and scoring but must not carry torch's memory and start-up time. The
    same for the snapshot builds' ADBC driver (about 45 MB per process)."""
    code = (
        "import sys, django; django.setup(); "
        "from django.urls import get_resolver; get_resolver().url_patterns; "
        "import config.urls, reward.tasks, generation.tasks, ratings.tasks, reward.training; "
        "import generation.admin, reward.admin; "
        "print('torch' in sys.modules, 'adbc_driver_manager' in sys.modules)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "SECRET_KEY": "x"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "False False"


# design.md §1: ratings -> generation -> generation.music; reward -> ratings, generation,
# reward.learning; reward.learning -> generation.music; the pure layers know no Django.
LAYERS = [  # (module prefix, layer), most specific first
    ("generation.music", "music"), ("reward.learning", "learning"),
    ("generation", "generation"), ("ratings", "ratings"), ("reward", "reward"),
    ("config", "config"), ("django", "django"),
]  # fmt: skip
MAY_IMPORT = {
    "music": {"music"},
    "learning": {"learning", "music"},
    "generation": {"generation", "music", "django"},
    "ratings": {"ratings", "generation", "music", "django"},
    "reward": {"reward", "ratings", "generation", "music", "learning", "django"},
    "config": {"config", "ratings", "generation", "reward", "music", "learning", "django"},
}
# Imports that run uphill and are tolerated for now: none. A new one fails this test; if one
# must stay a while, list it here with the reason.
KNOWN_UPHILL: set[tuple[str, str]] = set()


def layer_of(module: str) -> str | None:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def uphill_imports(root: Path = ROOT) -> set[tuple[str, str]]:
    """(file, imported module) for every import, at any depth of a file, that its layer may
    not make."""
    import ast

    found = set()
    for app in ("ratings", "generation", "reward", "config"):
        for path in sorted((root / app).rglob("*.py")):
            relative = path.relative_to(root)
            if "migrations" in relative.parts:
                continue
            layer = layer_of(".".join(relative.with_suffix("").parts))
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    target = layer_of(module)
                    if target is not None and target not in MAY_IMPORT[layer]:
                        found.add((relative.as_posix(), module))
    return found


def test_imports_run_downhill():
    found = uphill_imports()

    assert found - KNOWN_UPHILL == set(), "new imports against design.md §1's directions"
    assert KNOWN_UPHILL - found == set(), "paid off: remove these from KNOWN_UPHILL"


def test_the_layout_check_finds_an_uphill_import(tmp_path):
    planted = {
        "generation/music/model.py": "def load():\n    from django.conf import settings\n",
        "ratings/pair_selection.py": "from reward.models import RewardModel\n",
        "reward/learning/loop.py": "import generation.music.model\n",  # allowed
    }
    for name, code in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(code)

    assert uphill_imports(tmp_path) == {
        ("generation/music/model.py", "django.conf"),
        ("ratings/pair_selection.py", "reward.models"),
    }


def procfile(name: str) -> dict[str, str]:
    lines = (ROOT / "platform" / name).read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


@pytest.mark.parametrize("files", [["Procfile"], ["Procfile.web", "Procfile.worker"]])
def test_the_process_files_run_every_part_once_and_consume_every_routed_queue(files, settings):
    """One machine (Procfile) or one file per role: a queue no worker consumes would hold
    its jobs for good, and a second beat would run every periodic job twice."""
    processes = {kind: command for name in files for kind, command in procfile(name).items()}
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    consumed = set()
    for command in processes.values():
        if queues := re.search(r"--queues (\S+)", command):
            consumed |= set(queues.group(1).split(","))

    assert consumed == routed | {settings.CELERY_TASK_DEFAULT_QUEUE}
    assert processes["web"] == "gunicorn --config platform/gunicorn.conf.py config.wsgi"
    assert sum("celery -A config beat" in command for command in processes.values()) == 1
