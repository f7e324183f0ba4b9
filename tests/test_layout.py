"""The layout rules of design.md §1 that, once broken, break imports far away."""

import os
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

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


def test_the_web_process_never_imports_torch():
    """Every URL's view module and the task modules load without torch: the web process
    queues training and scoring but must not carry torch's memory and start-up time."""
    code = (
        "import sys, django; django.setup(); "
        "from django.urls import get_resolver; get_resolver().url_patterns; "
        "import config.urls, reward.tasks, generation.tasks, ratings.tasks, reward.training; "
        "import generation.admin, reward.admin; "
        "print('torch' in sys.modules)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "SECRET_KEY": "x"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "False"
