"""Render the per-service deploy files from one template each, or check they are current.

Every directory ``services/<name>/`` with a ``pyproject.toml`` is a service. From it:

- ``services/<name>/Dockerfile`` is rendered from ``deploy/docker/Dockerfile.in``, with the
  differences between services taken from ``deploy/docker/services.toml`` (HTTP port and
  health path, extra ENV, and Debian packages for the runtime stage, with the extra apt
  repositories of ``deploy/docker/apt/`` they come from);
- ``skaffold.yaml`` gets one artifact per service and the Helm image overrides for it;
- ``deploy/helm/ccc/values.yaml`` must carry an entry under ``services:`` (checked, not
  written: values are hand-kept, with comments).

``--check`` writes nothing and exits 1 naming every stale or missing file, so CI catches a
Dockerfile edited by hand or a new service that nobody wired into the chart.

Standard library only (tomllib), plus PyYAML for reading the values file.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy/docker/Dockerfile.in"
OVERRIDES = ROOT / "deploy/docker/services.toml"
APT_DIR = ROOT / "deploy/docker/apt"
APT_KEYRINGS = "/etc/apt/keyrings"
VALUES = ROOT / "deploy/helm/ccc/values.yaml"
SKAFFOLD = ROOT / "skaffold.yaml"
GENERATED = "GENERATED from deploy/docker/Dockerfile.in by tools/deploy_render.py: do not edit."
METRICS_PORT = 9090


@dataclass
class ServiceDir:
    name: str
    """Directory name under services/ (also the image suffix: ccc-<name>)."""
    package: str
    module: str
    http_port: int | None = None
    health_path: str = "/metrics"
    env: dict[str, str] = field(default_factory=dict)
    apt_packages: list[str] = field(default_factory=list)
    """Debian packages of the runtime stage, each pinned ``name=version``."""
    apt_sources: list[str] = field(default_factory=list)
    """Extra apt repositories: deploy/docker/apt/<name>.sources and <name>.asc."""

    @property
    def image(self) -> str:
        return f"ccc-{self.name}"

    @property
    def port(self) -> int:
        return self.http_port or METRICS_PORT


def discover(root: Path = ROOT) -> list[ServiceDir]:
    overrides = tomllib.loads(OVERRIDES.read_text()) if OVERRIDES.exists() else {}
    found = []
    for pyproject in sorted((root / "services").glob("*/pyproject.toml")):
        directory = pyproject.parent
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        package = project.get("name")
        if not package or not package.startswith("ccc-"):
            raise SystemExit(f"{pyproject}: [project].name must be ccc-<name>, got {package!r}")
        module = package.removeprefix("ccc-").replace("-", "_")
        if not (directory / "src/ccc" / module).is_dir():
            raise SystemExit(f"{directory}: expected the package at src/ccc/{module}/")
        extra = overrides.get(directory.name, {})
        found.append(
            ServiceDir(
                name=directory.name,
                package=package,
                module=module,
                http_port=extra.get("http_port"),
                health_path=extra.get("health_path", "/metrics"),
                env={str(k): str(v) for k, v in extra.get("env", {}).items()},
                apt_packages=[str(p) for p in extra.get("apt_packages", [])],
                apt_sources=[str(s) for s in extra.get("apt_sources", [])],
            )
        )
        check_apt(found[-1])
    unknown = set(overrides) - {s.name for s in found}
    if unknown:
        raise SystemExit(f"{OVERRIDES.relative_to(ROOT)} names no service dir: {sorted(unknown)}")
    return found


PINNED = re.compile(r"^[a-z0-9][a-z0-9+.-]+=[0-9][A-Za-z0-9.+~:*-]*$")


def check_apt(svc: ServiceDir) -> None:
    """Every package pinned (hadolint DL3008), every apt source present and signed."""
    where = f"{OVERRIDES.relative_to(ROOT)} [{svc.name}]"
    loose = [p for p in svc.apt_packages if not PINNED.match(p)]
    if loose:
        raise SystemExit(f"{where}: apt_packages must be pinned name=version: {loose}")
    if svc.apt_sources and not svc.apt_packages:
        raise SystemExit(f"{where}: apt_sources without apt_packages")
    for name in svc.apt_sources:
        sources, key = APT_DIR / f"{name}.sources", APT_DIR / f"{name}.asc"
        if not (sources.is_file() and key.is_file()):
            raise SystemExit(f"{where}: apt source {name!r} needs {sources} and {key}")
        signed_by = f"Signed-By: {APT_KEYRINGS}/{name}.asc"
        if signed_by not in sources.read_text().splitlines():
            raise SystemExit(f"{sources.relative_to(ROOT)}: expected the line {signed_by!r}")


def apt_block(svc: ServiceDir) -> str:
    """The runtime stage's package layer, or nothing for a service that needs none."""
    if not svc.apt_packages:
        return ""
    rel = APT_DIR.relative_to(ROOT)
    lines = [
        "# Debian packages of this service (deploy/docker/services.toml, apt_packages), pinned",
        "# to a version series so rebuilds take its security fixes; apt lists removed in the",
        "# same layer.",
    ]
    for name in svc.apt_sources:
        lines += [
            f"COPY {rel}/{name}.asc {APT_KEYRINGS}/{name}.asc",
            f"COPY {rel}/{name}.sources /etc/apt/sources.list.d/{name}.sources",
        ]
    lines += [
        "RUN apt-get update \\",
        " && apt-get install -y --no-install-recommends \\",
        *(f"        '{package}' \\" for package in svc.apt_packages),
        " && rm -rf /var/lib/apt/lists/*",
    ]
    return "\n".join(lines) + "\n"


def dockerfile(svc: ServiceDir) -> str:
    env = "".join(f" \\\n    {k}={v}" for k, v in sorted(svc.env.items()))
    if svc.http_port:
        note = f"Health: the service's own HTTP endpoint {svc.health_path} on port {svc.port}."
    else:
        note = (
            "Health: a bus service serves no HTTP; its Prometheus listener (CCC_METRICS_PORT)"
            " runs in the service process, so /metrics answering means the process is up."
        )
    text = TEMPLATE.read_text()
    for key, value in {
        "@GENERATED@": GENERATED,
        "@SERVICE@": svc.name,
        "@PACKAGE@": svc.package,
        "@MODULE@": svc.module,
        "@PORT@": str(svc.port),
        "@HEALTH_URL@": f"http://127.0.0.1:{svc.port}{svc.health_path}",
        "@HEALTH_NOTE@": note,
        "@EXTRA_ENV@": env,
        "@APT_PACKAGES@": apt_block(svc),
    }.items():
        text = text.replace(key, value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise SystemExit(f"unknown placeholder(s) in {TEMPLATE.name}: {sorted(set(leftover))}")
    return text


def skaffold(services: list[ServiceDir]) -> str:
    """skaffold.yaml: artifacts and Helm image overrides generated, profiles written out."""
    lines = [
        "# GENERATED by tools/deploy_render.py from the services/ directories: do not edit.",
        "# Regenerate with `make -f deploy/deploy.mk dockerfiles`.",
        "#   skaffold dev -p dev                      # local cluster, images loaded, not pushed",
        "#   skaffold run -p talos --default-repo R   # Talos cluster, images pushed to R",
        "apiVersion: skaffold/v4beta11",
        "kind: Config",
        "metadata:",
        "  name: ccc",
        "build:",
        "  tagPolicy:",
        "    gitCommit: {}",
        "  local:",
        "    useBuildkit: true",
        "    concurrency: 2",
        "  artifacts:",
    ]
    for svc in services:
        lines += [
            f"    - image: {svc.image}",
            "      context: .",
            "      docker:",
            f"        dockerfile: services/{svc.name}/Dockerfile",
        ]
    lines += [
        "deploy:",
        "  helm:",
        "    releases:",
        "      - name: ccc",
        "        chartPath: deploy/helm/ccc",
        "        namespace: ccc",
        "        createNamespace: true",
        "        # charts/ holds no archives in git: skaffold runs `helm dependency build`.",
        "        skipBuildDependencies: false",
        "        wait: true",
        "        valuesFiles: []",
        "        setValueTemplates:",
    ]
    for svc in services:
        var = svc.image.replace("-", "_")
        lines += [
            f'          services.{svc.name}.image.repository: "{{{{.IMAGE_REPO_{var}}}}}"',
            f"          services.{svc.name}.image.tag: "
            f'"{{{{.IMAGE_TAG_{var}}}}}@{{{{.IMAGE_DIGEST_{var}}}}}"',
        ]
    lines += [
        "profiles:",
        "  - name: dev",
        "    # One NATS server, no persistence, one replica of everything; images stay local.",
        "    patches:",
        "      - op: add",
        "        path: /build/local/push",
        "        value: false",
        "      - op: add",
        "        path: /deploy/helm/releases/0/valuesFiles/-",
        "        value: deploy/helm/ccc/values-dev.yaml",
        "  - name: talos",
        "    # Production values for Talos: 3-node JetStream on PVs, restricted namespace,",
        "    # NATS users per service. Images are pushed to --default-repo.",
        "    patches:",
        "      - op: add",
        "        path: /build/local/push",
        "        value: true",
        "      - op: add",
        "        path: /deploy/helm/releases/0/valuesFiles/-",
        "        value: deploy/helm/ccc/values-talos.yaml",
        "",
    ]
    return "\n".join(lines)


def values_services() -> set[str]:
    import yaml

    data = yaml.safe_load(VALUES.read_text()) or {}
    return set((data.get("services") or {}).keys())


def main() -> None:
    parser = argparse.ArgumentParser(description="render Dockerfiles and skaffold.yaml")
    parser.add_argument("--check", action="store_true", help="write nothing; fail if stale")
    args = parser.parse_args()
    services = discover()
    wanted = {ROOT / f"services/{s.name}/Dockerfile": dockerfile(s) for s in services}
    wanted[SKAFFOLD] = skaffold(services)
    problems = []
    for path, text in wanted.items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        rel = path.relative_to(ROOT)
        if args.check:
            diff = difflib.unified_diff(
                (current or "").splitlines(),
                text.splitlines(),
                f"{rel} (on disk)",
                f"{rel} (rendered)",
                lineterm="",
                n=1,
            )
            problems.append(f"{rel} is stale:\n" + "\n".join(list(diff)[:40]))
        else:
            path.write_text(text)
            print(f"wrote {rel}")
    if VALUES.exists():
        missing = sorted({s.name for s in services} - values_services())
        if missing:
            problems.append(
                f"{VALUES.relative_to(ROOT)} has no services.<name> entry for {missing}: "
                "add one (an empty map {} takes every default)"
            )
    if problems:
        print("\n".join(problems), file=sys.stderr)
        if args.check:
            print("run: make -f deploy/deploy.mk dockerfiles", file=sys.stderr)
        sys.exit(1)
    if args.check:
        print(
            f"deploy files current for {len(services)} service(s): "
            + ", ".join(s.name for s in services)
        )


if __name__ == "__main__":
    main()
