"""Validate proto/: every JSON Schema against the 2020-12 meta-schema, every AsyncAPI
document with the official AsyncAPI parser (Node; skipped with a notice if node is absent).

Runs in the tools venv (jsonschema comes with checkov there): `make proto-validate`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
NODE_DIR = ROOT / ".tools/asyncapi"


def main() -> int:
    failures = 0
    schemas = sorted(PROTO.glob("*/*.schema.json"))
    for path in schemas:
        schema = json.loads(path.read_text())
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:
            failures += 1
            print(f"{path.relative_to(ROOT)}: not a valid 2020-12 schema: {exc}")
        if schema.get("$schema") != "https://json-schema.org/draft/2020-12/schema":
            failures += 1
            print(f"{path.relative_to(ROOT)}: $schema is not 2020-12")
    print(f"{len(schemas)} JSON Schemas checked against the 2020-12 meta-schema")
    docs = sorted(PROTO.glob("*/asyncapi.yaml"))
    npm, node = shutil.which("npm"), shutil.which("node")
    if not (npm and node):
        print("node/npm not found: AsyncAPI documents not validated")
        return 1 if failures else 0
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "validate.mjs"):
        shutil.copy(ROOT / "tools/asyncapi" / name, NODE_DIR / name)
    if not (NODE_DIR / "node_modules/@asyncapi/parser").exists():
        subprocess.run(
            [npm, "install", "--silent", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True
        )
    res = subprocess.run([node, str(NODE_DIR / "validate.mjs"), *map(str, docs)])
    return 1 if failures or res.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
