"""A regular (not editable) ``pip install`` into a fresh venv puts everything under ``cmedbert.``.

The venv is created without pip and sees the dependencies of the running interpreter through a
``.pth`` file (its site-packages directories are appended to ``sys.path``; the ``.pth`` files in
them, such as an editable install's finder, are not run), so ``pip install --no-deps
--no-build-isolation`` needs no network. The source is copied first, so the build writes
nothing into the checkout. The installed files are what the built wheel held.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = ("corpus", "tokenizer", "pretrain", "launch", "finetune")
IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                "*.pyc")

pytestmark = pytest.mark.slow


def _dependency_dirs() -> list[str]:
    dirs = [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    return list(dict.fromkeys(dirs))


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def _source_modules() -> set[str]:
    """Installed relative paths every .py of the package and the stage folders must have."""
    out = {f"cmedbert/{p.relative_to(REPO / 'cmedbert')}" for p in (REPO / "cmedbert").rglob("*")
           if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")}
    for stage in STAGES:
        out |= {f"cmedbert/{stage}/{p.relative_to(REPO / stage)}" for p in (REPO / stage).rglob("*.py")
                if "__pycache__" not in p.parts}
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(venv python, venv site-packages, environment) after ``pip install --no-deps SRC``."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=IGNORE)
    venv = tmp / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
                                                            "PIP_REQUIRE_VIRTUALENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INDEX"] = "1"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp,
                        env).strip())
    (purelib / "zz_dependencies.pth").write_text("\n".join(_dependency_dirs()) + "\n", encoding="utf-8")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q",
          str(src)], tmp, env)
    return python, purelib, env


def test_stage_names_are_not_top_level_and_imports_come_from_the_installed_copy(installed, tmp_path):
    python, purelib, env = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    modules = sorted(m.replace("/", ".")[:-3].removesuffix(".__init__") for m in _source_modules()
                     if m.endswith(".py") and "/demo_data/" not in m and not m.endswith("__main__.py"))
    probe = (
        "import importlib, importlib.util as u, json\n"
        "spec = [u.find_spec(m) for m in ('corpus', 'tokenizer', 'pretrain', 'launch', 'finetune')]\n"
        f"mods = {modules!r}\n"
        "files = {m: importlib.import_module(m).__file__ for m in mods}\n"
        "print(json.dumps({'spec': [repr(s) for s in spec], 'files': files}))\n"
    )
    out = json.loads(_run([str(python), "-c", probe], elsewhere, env).strip().splitlines()[-1])
    assert out["spec"] == ["None"] * 5
    assert "cmedbert.corpus.build" in out["files"] and "cmedbert.finetune.run" in out["files"]
    outside = {m: f for m, f in out["files"].items() if not Path(f).resolve().is_relative_to(purelib.resolve())}
    assert not outside, f"imported from outside the installed copy: {outside}"


def test_installed_files_hold_every_module_and_the_demo_data(installed):
    _, purelib, _ = installed
    have = {str(p.relative_to(purelib)) for p in (purelib / "cmedbert").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    missing = _source_modules() - have
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert (purelib / "cmedbert/demo_data/cblue/KUAKE-QIC/KUAKE-QIC_train.json").is_file()
    assert not any((purelib / s).exists() for s in STAGES)  # nothing generic at the top level


def test_console_script_lists_every_subcommand(installed, tmp_path):
    python, _, env = installed
    from cmedbert.cli import STAGES as SUBCOMMANDS

    help_text = _run([str(python.parent / "cmedbert"), "--help"], tmp_path, env)
    listed = {line.split()[0] for line in help_text.splitlines() if line.startswith("    ") and line.split()}
    assert set(SUBCOMMANDS) <= listed, f"missing from --help: {set(SUBCOMMANDS) - listed}"
    demo_help = _run([str(python.parent / "cmedbert"), "demo", "--help"], tmp_path, env)
    assert "--out" in demo_help
