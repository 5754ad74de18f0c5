"""Replay the build stage of each service image without Docker: `make images-dryrun`.

No Docker engine runs here, so the images cannot be built. This replays what the build
stage of deploy/docker/Dockerfile.in does, with the same inputs (.dockerignore'd context:
pyproject.toml, uv.lock, libs/, services/<name>/) and the same uv commands, into a
temporary directory, then reports the virtualenv's size and packages, checks that the
entry module imports from it, and that no other service's package (nor torch) came in.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from deploy_render import discover  # noqa: E402

# Heavy packages an image may carry only if its own pyproject asks for them directly
# (the gateway carries no litellm, no image carries torch by accident).
HEAVY = {"torch", "litellm", "llama-cpp-python"}


def direct_dependencies(service_dir: Path) -> set[str]:
    deps = tomllib.loads((service_dir / "pyproject.toml").read_text())["project"]
    return {
        re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in deps.get("dependencies", [])
    }


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> int:
    uv = os.environ.get("UV") or shutil.which("uv") or "uv"
    services = discover()
    failures = 0
    for svc in services:
        with tempfile.TemporaryDirectory(prefix=f"ccc-image-{svc.name}-") as tmp:
            src, venv = Path(tmp, "src"), Path(tmp, "app/.venv")
            src.mkdir()
            env = {
                **os.environ,
                "UV_PROJECT_ENVIRONMENT": str(venv),
                "UV_COMPILE_BYTECODE": "1",
                "UV_LINK_MODE": "copy",
                "UV_PYTHON_DOWNLOADS": "never",
            }
            env.pop("VIRTUAL_ENV", None)
            for name in ("pyproject.toml", "uv.lock"):
                shutil.copy(ROOT / name, src / name)
            sync = [uv, "sync", "--quiet", "--frozen", "--no-dev", "--package", svc.package]
            subprocess.run([*sync, "--no-install-workspace"], cwd=src, env=env, check=True)
            ignore = shutil.ignore_patterns("__pycache__", "tests", ".venv", "*.pyc")
            shutil.copytree(ROOT / "libs", src / "libs", ignore=ignore)
            shutil.copytree(
                ROOT / "services" / svc.name, src / "services" / svc.name, ignore=ignore
            )
            subprocess.run([*sync, "--no-editable"], cwd=src, env=env, check=True)
            shutil.rmtree(src)  # the runtime stage has no source tree
            listing = subprocess.run(
                [uv, "pip", "list", "--python", str(venv / "bin/python"), "--format", "freeze"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            names = {line.split("==")[0].lower() for line in listing}
            others = {f"ccc-{s.name}" for s in services if s.name != svc.name}
            heavy = HEAVY - direct_dependencies(ROOT / "services" / svc.name)
            bad = sorted((names & others) | (names & heavy))
            # Import what the entry point runs, without running it (``python -m`` would
            # start the service): the service module where there is one, else the package,
            # and check that ``ccc.<name>.__main__`` is there.
            check = (
                "import importlib, importlib.util as u; "
                f"assert u.find_spec('ccc.{svc.module}.__main__'), 'no __main__'; "
                f"m = 'ccc.{svc.module}.service' if u.find_spec('ccc.{svc.module}.service') "
                f"else 'ccc.{svc.module}.app' if u.find_spec('ccc.{svc.module}.app') "
                f"else 'ccc.{svc.module}'; importlib.import_module(m)"
            )
            probe = subprocess.run(
                [str(venv / "bin/python"), "-c", check],
                capture_output=True,
                text=True,
                cwd=tmp,
                timeout=300,
                env={"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            )
            ok = probe.returncode == 0 and not bad
            failures += not ok
            print(
                f"{svc.image}: {len(names)} packages, venv {size_mb(venv):.0f} MB, "
                f"entry ccc.{svc.module} {'imports' if probe.returncode == 0 else 'FAILS'}"
                + (f", unwanted {bad}" if bad else "")
            )
            if probe.returncode:
                print(probe.stderr[-2000:], file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
