"""The house rules: one-way layers (core -> RL -> commands), no import cycles, and a wheel that
works outside the checkout with its built-in configs and no top-level ``envs`` / ``policies``."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each installed package lives in the checkout (pyproject's package-dir mapping).
SOURCES = {"metactl": ROOT / "metactl", "metactl.envs": ROOT / "envs", "metactl.policies": ROOT / "policies"}
RL = ("metactl.envs", "metactl.policies")
COMMANDS = ("metactl.commands", "metactl.__main__")


def _modules() -> dict[str, Path]:
    """Every metactl module name -> its source file."""
    out = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _layer(name: str) -> str:
    if name.startswith(COMMANDS):
        return "commands"
    if name.startswith(RL):
        return "rl"
    return "core"


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """metactl modules ``path`` imports (all import statements, or only those run at import time)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # `if TYPE_CHECKING:` blocks never run
        nodes = [n for n in nodes if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
        nodes = [c for n in nodes for c in ([n] if not isinstance(n, (ast.If, ast.Try)) else ast.walk(n))]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return {m for m in found if m in MODULES and m != module}


def test_the_layout_is_what_the_tests_think_it_is():
    assert {"metactl.runner", "metactl.envs.phase_env", "metactl.policies.sb3", "metactl.commands.cli"} <= set(MODULES)
    assert all(_layer(m) == "core" for m in ("metactl.runner", "metactl.schedule", "metactl.rundir"))


@pytest.mark.parametrize("layer, forbidden", [("core", ("rl", "commands")), ("rl", ("commands",))])
def test_layers_import_one_way(layer, forbidden):
    """No import statement anywhere in a lower layer (lazy ones inside functions included) names a
    module of a higher one."""
    bad = [(m, dep) for m, path in MODULES.items() if _layer(m) == layer
           for dep in _imports(path, m, top_level_only=False) if _layer(dep) in forbidden]
    assert not bad, f"{layer} modules import from {forbidden}: {bad}"


def test_core_modules_import_no_rl_or_command_module_in_a_fresh_interpreter():
    core = [m for m in MODULES if _layer(m) == "core"]
    code = (
        "import importlib, json, sys\n"
        f"for m in {core!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(json.dumps(sorted(k for k in sys.modules if k.startswith({RL + COMMANDS!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_no_import_cycles():
    """The module-level import graph of every metactl module is acyclic."""
    graph = {m: _imports(p, m, top_level_only=True) for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for dep in sorted(graph[m]):
            # Importing a package's own submodule from its __init__ is not a cycle.
            if state.get(dep) == 1 and not m.startswith(dep + "."):
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _source_copy(dest: Path) -> Path:
    """The files git would give a fresh clone (tracked, and untracked but not ignored)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    src = _source_copy(tmp_path_factory.mktemp("src"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(dist)], check=True, capture_output=True)
    (found,) = dist.glob("metactl-*.whl")
    return found


def test_the_wheel_holds_the_configs_and_no_top_level_envs_or_policies(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"metactl"}, tops
    for config in ("schedules/default.yaml", "schedules/expert.yaml", "train/default.yaml", "run/default.yaml",
                   "sweep/seeds.yaml", "transfer/smollm2-135m.yaml"):
        assert f"metactl/configs/{config}" in names
    # Every source module of the checkout is in the wheel, under the metactl namespace.
    for module, path in MODULES.items():
        rel = "/".join(module.split(".")) + ("/__init__.py" if path.name == "__init__.py" else ".py")
        assert rel in names, f"{module} ({path}) is missing from the wheel"
    assert "metactl/assets/proxy-tiny/model.safetensors" in names


def test_the_wheel_runs_a_schedule_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import metactl.envs, metactl.paths as p; print(p.CONFIGS)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), where
    out = elsewhere / "expert"
    res = subprocess.run([sys.executable, "-m", "metactl", "run-schedule", "--schedule", "expert", "--model",
                          "proxy-tiny", "--suite", "style-vs-truth", "--out", str(out), "--quiet", "--set",
                          "training.total_steps=8"], check=False, cwd=elsewhere, env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "scores.jsonl").is_file() and (out / "adapters").is_dir()
