"""Check the Helm chart and the Dockerfiles offline: what `make chart-check` runs.

1. ``helm lint --strict`` with the default values and with values-talos.yaml;
2. ``helm template`` for four cases (default; Talos production; an external NATS; gateway
   exposure through Ingress and Gateway API with the Prometheus Operator present) into
   ``.tools/chart-check/<case>.yaml``;
3. every rendered object validated against the Kubernetes OpenAPI schemas
   (kubernetes-validate, strict) - custom resources (ServiceMonitor, HTTPRoute) have no
   bundled schema and are listed as such;
4. every pod template checked against Pod Security "restricted" (the rules the admission
   controller applies, re-stated in ``restricted_violations``);
5. checkov on the rendered manifests and on every services/*/Dockerfile, hadolint on the
   Dockerfiles. Checks that are skipped carry their reason in deploy/checkov.yaml.

The subcharts (nats, qdrant) are archives that `helm dependency build` downloads and git
does not hold. When they are absent, the chart is copied with its dependencies removed and
only CCC's own templates are rendered; the report says so. Run `helm dependency build
deploy/helm/ccc` on a machine that reaches the chart repositories to check the whole tree.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy/helm/ccc"
OUT = ROOT / ".tools/chart-check"
CHECKOV_CONFIG = ROOT / "deploy/checkov.yaml"
CRD_GROUPS = ("monitoring.coreos.com/", "gateway.networking.k8s.io/")
KUBE_VERSION = "1.34.0"  # Talos 1.11 ships Kubernetes 1.34
CASES: dict[str, list[str]] = {
    "default": [],
    "talos": [
        "-f",
        str(CHART / "values-talos.yaml"),
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
    ],
    "external-bus": ["--set", "nats.enabled=false,bus.url=nats://nats.messaging:4222"],
    "exposure": [
        "-f",
        str(CHART / "values-talos.yaml"),
        "--set",
        "ingress.enabled=true,ingress.className=nginx,gatewayAPI.enabled=true",
        "--set",
        "gatewayAPI.parentRefs[0].name=public,gatewayAPI.hostnames[0]=ccc.example.com",
        "--set",
        "qdrant.enabled=true",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "gateway.networking.k8s.io/v1/HTTPRoute",
    ],
}


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, text=True, **kw)


def lock_in_sync(deps: list[dict[str, Any]]) -> list[str]:
    """Chart.lock pins exactly Chart.yaml's dependencies (helm checks the digest on build)."""
    lock_file = CHART / "Chart.lock"
    if not lock_file.exists():
        return ["Chart.lock is missing: run `helm dependency update deploy/helm/ccc`"]
    locked = yaml.safe_load(lock_file.read_text()).get("dependencies") or []
    want = sorted((d["name"], str(d["version"]), d["repository"]) for d in deps)
    have = sorted((d["name"], str(d["version"]), d["repository"]) for d in locked)
    if want != have:
        return [f"Chart.lock {have} does not match Chart.yaml {want}: run helm dependency update"]
    return []


def prepare_chart(workdir: Path) -> tuple[Path, bool]:
    """The chart to check, and whether its subcharts are in it."""
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    deps = meta.get("dependencies") or []
    charts = CHART / "charts"
    present = all(
        (charts / f"{d['name']}-{d['version']}.tgz").exists() or (charts / d["name"]).is_dir()
        for d in deps
    )
    if present:
        return CHART, True
    copy = workdir / "ccc"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    meta.pop("dependencies", None)
    (copy / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    names = ", ".join(f"{d['name']} {d['version']}" for d in deps)
    print(
        f"NOTE: subcharts not built ({names}); checking CCC's own templates only. "
        "`helm dependency build deploy/helm/ccc` adds them."
    )
    return copy, False


def restricted_violations(doc: dict[str, Any]) -> list[str]:
    """Pod Security Standards, profile "restricted" (Kubernetes 1.25+), for one object."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        pod = spec
    else:
        pod = ((spec.get("template") or {}).get("spec")) or (
            (spec.get("jobTemplate") or {}).get("spec", {}).get("template", {}).get("spec")
        )
    if not pod:
        return []
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    bad = []
    psc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            bad.append(f"{where}: {flag}")
    for vol in pod.get("volumes") or []:
        allowed = {
            "name",
            "configMap",
            "csi",
            "downwardAPI",
            "emptyDir",
            "ephemeral",
            "persistentVolumeClaim",
            "projected",
            "secret",
        }
        if set(vol) - allowed:
            bad.append(f"{where}: volume {vol.get('name')} of a forbidden type")
    containers = (pod.get("containers") or []) + (pod.get("initContainers") or [])
    for c in containers:
        sc = c.get("securityContext") or {}
        name = f"{where}/{c.get('name')}"
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            bad.append(f"{name}: capabilities must drop ALL")
        added = set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            bad.append(f"{name}: adds capabilities {sorted(added)}")
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot"))):
            bad.append(f"{name}: runAsNonRoot not set")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile RuntimeDefault or Localhost required")
        if c.get("ports"):
            for p in c["ports"]:
                if p.get("hostPort"):
                    bad.append(f"{name}: hostPort")
        # Not a PSS rule, but a requirement of this chart: read-only root filesystem.
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{name}: readOnlyRootFilesystem must be true")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--helm", default=str(ROOT / ".tools/bin/helm"))
    parser.add_argument("--bin", default=str(Path(sys.executable).parent), help="tools venv bin")
    args = parser.parse_args()
    started = time.monotonic()
    tools = Path(args.bin)
    OUT.mkdir(parents=True, exist_ok=True)
    chart, full = prepare_chart(OUT)
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    failures: list[str] = lock_in_sync(meta.get("dependencies") or [])
    print("Chart.lock:", failures[0] if failures else "pins exactly the dependencies of Chart.yaml")

    for values in ([], ["-f", str(CHART / "values-talos.yaml")]):
        lint = [args.helm, "lint", "--strict", "--kube-version", KUBE_VERSION, str(chart)]
        if run([*lint, *values]).returncode:
            failures.append(f"helm lint --strict {' '.join(values)}")

    rendered: dict[str, list[dict[str, Any]]] = {}
    manifests = OUT / "manifests"
    shutil.rmtree(manifests, ignore_errors=True)
    manifests.mkdir()
    for case, extra in CASES.items():
        res = run(
            [
                args.helm,
                "template",
                "ccc",
                str(chart),
                "-n",
                "ccc",
                "--kube-version",
                KUBE_VERSION,
                "--include-crds",
                *extra,
            ],
            capture_output=True,
        )
        if res.returncode:
            print(res.stderr, file=sys.stderr)
            failures.append(f"helm template ({case})")
            continue
        (OUT / f"{case}.yaml").write_text(res.stdout)
        docs = [d for d in yaml.safe_load_all(res.stdout) if d]
        rendered[case] = docs
        kinds: dict[str, int] = {}
        for d in docs:
            kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
        print(
            f"{case}: {len(docs)} objects: "
            + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
        )
        core, custom = [], []
        for d in docs:
            (custom if d["apiVersion"].startswith(CRD_GROUPS) else core).append(d)
        core_file = manifests / f"{case}.yaml"
        core_file.write_text(yaml.safe_dump_all(core, sort_keys=False))
        if custom:
            print(
                "  no bundled schema, not schema-validated: "
                + ", ".join(sorted({f"{d['kind']}/{d['metadata']['name']}" for d in custom}))
            )
        res = run(
            [
                str(tools / "kubernetes-validate"),
                "--strict",
                "--quiet",
                "-k",
                KUBE_VERSION,
                str(core_file),
            ],
            capture_output=True,
        )
        if res.returncode:
            print(res.stdout, res.stderr, file=sys.stderr)
            failures.append(f"kubernetes-validate ({case})")
        else:
            print(f"  kubernetes-validate {KUBE_VERSION} --strict: {len(core)} objects valid")
        violations = [v for d in docs for v in restricted_violations(d)]
        if violations:
            print("\n".join(f"  PSS restricted: {v}" for v in violations), file=sys.stderr)
            failures.append(f"Pod Security restricted ({case})")
        else:
            pods = sum(
                1
                for d in docs
                if restricted_violations(d) == []
                and (d["kind"] in ("Deployment", "StatefulSet", "Pod", "Job", "DaemonSet"))
            )
            print(f"  Pod Security restricted: {pods} pod templates pass")

    checkov = [
        str(tools / "checkov"),
        "--skip-download",
        "--quiet",
        "--compact",
        "--config-file",
        str(CHECKOV_CONFIG),
    ]
    if run([*checkov, "--framework", "kubernetes", "-d", str(manifests)]).returncode:
        failures.append("checkov kubernetes")
    dockerfiles = sorted(ROOT.glob("services/*/Dockerfile"))
    dargs = [a for f in dockerfiles for a in ("-f", str(f))]
    if run([*checkov, "--framework", "dockerfile", *dargs]).returncode:
        failures.append("checkov dockerfile")
    hadolint = tools / "hadolint"
    if hadolint.exists():
        if run(
            [
                str(hadolint),
                "--config",
                str(ROOT / "deploy/docker/hadolint.yaml"),
                *map(str, dockerfiles),
            ]
        ).returncode:
            failures.append("hadolint")
    else:
        print("hadolint not installed: skipped")

    took = time.monotonic() - started
    scope = "chart with subcharts" if full else "CCC templates (subcharts not built)"
    if failures:
        print(
            f"chart-check FAILED in {took:.0f}s ({scope}): " + "; ".join(failures), file=sys.stderr
        )
        return 1
    print(
        f"chart-check passed in {took:.0f}s ({scope}); rendered manifests in "
        f"{OUT.relative_to(ROOT)}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
