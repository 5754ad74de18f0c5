"""Generate proto/ from the pydantic contracts: JSON Schema 2020-12 and AsyncAPI 3.0.

- ``proto/common/<Model>.schema.json``: every model of ``ccc.common.contracts.*``;
- ``proto/<service>/<Model>.schema.json``: each request and response message of a service
  (``ccc.<service>.service:service``); models from ``ccc.common.contracts`` are referenced
  in proto/common/, not copied;
- ``proto/<service>/asyncapi.yaml``: the service on the bus: one request-reply channel per
  endpoint (queue group ``q``), the durable command channel on stream CCC_COMMANDS, the
  command result events, operation events and lifecycle events on CCC_EVENTS.

An endpoint whose handler returns ``ccc.common.Binary`` answers with raw bytes, not JSON:
its reply message says so (``contentType: application/octet-stream``, a binary string
payload, the real media type in the ``Content-Type`` header) and gets no JSON Schema file.
A handler annotated ``Model | Binary`` gets both reply messages: the JSON one and the binary.

Output is deterministic (sorted keys, stable file names) so ``git diff --exit-code proto/``
is the drift check. Files of a service or model that no longer exists are removed.
A service directory without a ``service`` module (the gateway) gets no document.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter

from ccc.common import Binary
from ccc.common.endpoint import json_answer_type

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
QUEUE_GROUP = "q"  # nats.micro's default queue group, used by ccc.common.Service
COMMON_PREFIX = "ccc.common.contracts"
# A Binary reply's contentType: the handler picks the real media type per answer (audio/mpeg,
# text/plain, ...) and sends it in the Content-Type header, as the gateway's OpenAPI says.
BINARY_CONTENT_TYPE = "application/octet-stream"
NO_JSON = object()  # split_binary: the answer is never JSON


class _NoAliases(yaml.SafeDumper):
    """Write a shared object out in full each time: no &id001 anchors in the documents."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def camel(op: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[._]", op))


def split_binary(response_type: Any) -> tuple[Any, bool]:
    """(the JSON part of an endpoint's answer, whether it may answer ``Binary``).

    ``Binary`` -> (NO_JSON, True); ``Model | Binary`` -> (Model, True); anything else ->
    (itself, False). The union is split by the runtime's own ``json_answer_type``, the
    rule the gateway's OpenAPI follows too.
    """
    if response_type is Binary:
        return NO_JSON, True
    json_part = json_answer_type(response_type)
    return json_part, json_part is not response_type


def model_schema(model: Any, mode: str, schema_id: str, title: str | None = None) -> dict[str, Any]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        schema = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
    else:
        schema = TypeAdapter(model).json_schema(mode=mode)  # type: ignore[arg-type]
        schema.setdefault("title", title)
    return {"$schema": SCHEMA_DIALECT, "$id": schema_id, **schema}


class Writer:
    """Collects files under proto/, then writes them and prunes what was not written."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: dict[Path, str] = {}

    def add(self, rel: str, text: str) -> None:
        self.files[self.out / rel] = text

    def commit(self, dirs: set[str]) -> None:
        for d in sorted(dirs):
            (self.out / d).mkdir(parents=True, exist_ok=True)
        for path, text in sorted(self.files.items()):
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        for path in sorted(self.out.glob("*/*")):
            if path.is_file() and path not in self.files:
                path.unlink()
                print(f"removed {path}")
        for path in sorted(self.out.iterdir()):
            if path.is_dir() and path.name not in dirs:
                shutil.rmtree(path)
                print(f"removed {path}/")


def common_models() -> dict[type[BaseModel], str]:
    """Every model defined in ccc.common.contracts.*, mapped to its file name."""
    package = importlib.import_module(COMMON_PREFIX)
    models: list[tuple[str, type[BaseModel]]] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{COMMON_PREFIX}.{info.name}")
        for _, obj in sorted(inspect.getmembers(module, inspect.isclass)):
            if issubclass(obj, BaseModel) and obj.__module__ == module.__name__:
                models.append((info.name, obj))
    # A class name is the file name; where two modules use the same name, both files are
    # prefixed with their module (``ai.Usage``), so no contract hides another.
    counts: dict[str, int] = {}
    for _, model in models:
        counts[model.__name__] = counts.get(model.__name__, 0) + 1
    return {
        model: model.__name__ if counts[model.__name__] == 1 else f"{mod}.{model.__name__}"
        for mod, model in models
    }


def discover_services(services_dir: Path) -> list[tuple[str, Any]]:
    """(directory name, Service object) for each service that has ccc.<name>.service."""
    services = []
    for pyproject in sorted(services_dir.glob("*/pyproject.toml")):
        directory = pyproject.parent
        src = directory / "src"
        modules = (
            sorted(p.name for p in (src / "ccc").iterdir() if p.is_dir())
            if (src / "ccc").is_dir()
            else []
        )
        for module in modules:
            if (
                not (src / "ccc" / module / "service.py").exists()
                and not (src / "ccc" / module / "service").is_dir()
            ):
                continue
            if str(src) not in sys.path:
                sys.path.insert(0, str(src))
            mod = importlib.import_module(f"ccc.{module}.service")
            service = getattr(mod, "service", None)
            if service is None or not hasattr(service, "specs"):
                raise SystemExit(f"ccc.{module}.service has no `service` object")
            services.append((directory.name, service))
    return services


def service_documents(
    dirname: str, service: Any, common: dict[type[BaseModel], str], writer: Writer
) -> None:
    domain = service.name
    files: dict[Any, str] = {}  # model (or op-keyed response type) -> relative $ref
    used_names: dict[str, Any] = {}

    def ref_for(model: Any, mode: str, fallback: str) -> str:
        key = (model, mode) if not isinstance(model, type) else model
        if key in files:
            return files[key]
        if isinstance(model, type) and model in common:
            files[key] = f"../common/{common[model]}.schema.json"
            return files[key]
        name = (
            model.__name__ if isinstance(model, type) and issubclass(model, BaseModel) else fallback
        )
        if name in used_names and used_names[name] is not key:
            name = f"{fallback}{name}"
        used_names[name] = key
        rel = f"{name}.schema.json"
        writer.add(
            f"{dirname}/{rel}",
            dump_json(model_schema(model, mode, f"ccc/{dirname}/{rel}", title=name)),
        )
        files[key] = f"./{rel}"
        return files[key]

    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    ops = sorted(service.specs)

    def message(name: str, ref: str, summary: str, headers: bool = False) -> dict[str, str]:
        msg: dict[str, Any] = {
            "name": name,
            "title": name,
            "summary": summary,
            "contentType": "application/json",
            "payload": {"$ref": ref},
        }
        if headers:
            msg["headers"] = {"$ref": "#/components/schemas/RequestHeaders"}
        messages[name] = msg
        return {"$ref": f"#/components/messages/{name}"}

    def binary_message(name: str, summary: str) -> dict[str, str]:
        messages[name] = {
            "name": name,
            "title": name,
            "summary": summary,
            "description": "Raw bytes, not JSON: the body is the answer as it is. The header "
            "Content-Type names its media type (application/octet-stream unless the handler "
            "names another).",
            "contentType": BINARY_CONTENT_TYPE,
            "headers": {"$ref": "#/components/schemas/BinaryReplyHeaders"},
            "payload": {"$ref": "#/components/schemas/BinaryPayload"},
        }
        return {"$ref": f"#/components/messages/{name}"}

    error = message(
        "Problem",
        "#/components/schemas/Problem",
        "RFC 9457 problem; headers Nats-Service-Error and Nats-Service-Error-Code",
    )
    any_binary = False
    for op in ops:
        spec = service.specs[op]
        key = spec.name
        req_ref = ref_for(spec.request_model, "validation", camel(op) + "Request")
        request = message(f"{key}.request", req_ref, f"Request of {domain}.{op}", headers=True)
        json_type, binary = (None, False) if spec.operation else split_binary(spec.response_type)
        reply_messages: dict[str, Any] = {}
        if spec.operation:
            reply_messages["reply"] = message(
                f"{key}.reply",
                "../common/Operation.schema.json",
                "202: the operation record; the result comes as an operation event",
            )
        elif json_type is None:
            reply_messages["reply"] = message(
                f"{key}.reply", "#/components/schemas/Any", "Any JSON"
            )
        elif json_type is NO_JSON:
            reply_messages["reply"] = binary_message(f"{key}.reply", f"Reply of {domain}.{op}")
        else:
            reply_ref = ref_for(json_type, "serialization", camel(op) + "Response")
            reply_messages["reply"] = message(
                f"{key}.reply",
                reply_ref,
                f"Reply of {domain}.{op}" + (" (JSON; or raw bytes, see binary)" if binary else ""),
            )
            if binary:
                reply_messages["binary"] = binary_message(
                    f"{key}.reply.binary", f"Reply of {domain}.{op} as raw bytes"
                )
        any_binary = any_binary or binary
        reply_messages["error"] = error
        channels[key] = {
            "address": spec.subject,
            "title": f"{domain}.{op}",
            "description": spec.description or f"{domain}.{op}",
            "messages": {"request": request},
        }
        channels[f"{key}.reply"] = {
            "address": None,
            "description": "The requester's inbox (NATS reply subject).",
            "messages": reply_messages,
        }
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": (spec.description.splitlines() or [f"{domain}.{op}"])[0],
            "messages": [{"$ref": f"#/channels/{key}/messages/request"}],
            "reply": {
                "channel": {"$ref": f"#/channels/{key}.reply"},
                "messages": [
                    {"$ref": f"#/channels/{key}.reply/messages/{name}"} for name in reply_messages
                ],
            },
            "bindings": {"nats": {"queue": QUEUE_GROUP, "bindingVersion": "0.1.0"}},
            "x-ccc-roles": sorted(spec.roles),
            "x-ccc-timeout-seconds": spec.timeout,
            "x-ccc-kind": "operation" if spec.operation else "request",
        }
        if spec.http_method and spec.http_path:
            operation["x-ccc-http"] = f"{spec.http_method} {spec.http_path}"
        operations[key] = operation

        # The durable door and its result events.
        channels[f"cmd.{key}"] = {
            "address": f"ccc.cmd.{domain}.{op}",
            "description": f"Durable command for {domain}.{op} (stream CCC_COMMANDS, "
            f"work queue, durable consumer {domain!r}).",
            "messages": {"command": request},
        }
        operations[f"cmd.{key}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/cmd.{key}"},
            "summary": f"Consume durable commands for {domain}.{op}",
            "x-ccc-stream": "CCC_COMMANDS",
            "x-ccc-durable": domain,
        }
        for outcome, model in (("completed", "CommandCompleted"), ("failed", "CommandFailed")):
            name = f"evt.{key}.{outcome}"
            channels[name] = {
                "address": f"ccc.evt.{domain}.{op}.{outcome}",
                "description": f"Result of a durable {domain}.{op} command "
                "(deduplicated by correlation id; header Ccc-Correlation-Id).",
                "messages": {
                    outcome: message(
                        f"{key}.{outcome}",
                        f"../common/{model}.schema.json",
                        f"{op} command {outcome}",
                    )
                },
            }
            operations[name] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{name}"},
                "x-ccc-stream": "CCC_EVENTS",
            }

    statuses = ["pending", "running", "progress", "succeeded", "failed", "cancelled"]
    channels["evt.operation"] = {
        "address": f"ccc.evt.{domain}.operation.{{status}}",
        "description": "Progress and outcome of this service's long operations.",
        "parameters": {"status": {"description": "operation event", "enum": statuses}},
        "messages": {
            "event": message(
                "OperationEvent",
                "../common/OperationEvent.schema.json",
                "Operation progress or outcome",
            )
        },
    }
    operations["evt.operation"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/evt.operation"},
        "x-ccc-stream": "CCC_EVENTS",
    }
    for event in ("started", "stopped"):
        name = f"evt.service.{event}"
        channels[name] = {
            "address": f"ccc.evt.{domain}.service.{event}",
            "description": f"An instance of {domain} {event}.",
            "messages": {
                event: message(
                    f"service.{event}", "#/components/schemas/Lifecycle", f"Instance {event}"
                )
            },
        }
        operations[name] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "x-ccc-stream": "CCC_EVENTS",
        }

    schemas: dict[str, Any] = {
        "Any": {"description": "Any JSON value"},
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details",
            "properties": {
                k: {"type": t}
                for k, t in (
                    ("type", "string"),
                    ("title", "string"),
                    ("status", "integer"),
                    ("detail", "string"),
                    ("instance", "string"),
                    ("errors", "array"),
                )
            },
            "required": ["status", "title"],
        },
        "RequestHeaders": {
            "type": "object",
            "description": "NATS headers the runtime reads",
            "properties": {
                "traceparent": {"type": "string"},
                "Ccc-Caller": {"type": "string"},
                "Ccc-Roles": {"type": "string", "description": "comma-separated"},
                "Ccc-Params": {"type": "string", "description": "JSON of path/query"},
                "Nats-Msg-Id": {"type": "string", "description": "idempotency key"},
                "Ccc-Correlation-Id": {"type": "string"},
            },
        },
        "Lifecycle": {
            "type": "object",
            "properties": {
                "service": {"type": "string"},
                "version": {"type": "string"},
                "instance": {"type": "string"},
            },
            "required": ["service", "instance"],
        },
    }
    if any_binary:
        # The body is the bytes themselves, not a JSON string: ``format: binary`` is the
        # AsyncAPI/OpenAPI 3.0 idiom for that (``contentEncoding`` would mean bytes encoded
        # inside a JSON string, base64 and the like, which these replies are not).
        schemas["BinaryPayload"] = {
            "type": "string",
            "format": "binary",
            "description": "Raw bytes (ccc.common.Binary); the media type is in Content-Type",
        }
        schemas["BinaryReplyHeaders"] = {
            "type": "object",
            "description": "NATS headers of a raw-bytes reply",
            "properties": {
                "Content-Type": {
                    "type": "string",
                    "description": "media type of the bytes (audio/mpeg, text/plain, ...)",
                    "pattern": Binary.model_json_schema()["properties"]["content_type"]["pattern"],
                },
            },
            "required": ["Content-Type"],
        }
    doc = {
        "asyncapi": "3.0.0",
        "id": f"urn:ccc:{domain}",
        "info": {
            "title": f"CCC {domain} service",
            "version": str(service.version),
            "description": (service.description or domain)
            + "\n\nGenerated by tools/gen_proto.py from the pydantic contracts: do not edit.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "CCC_NATS_URL (default nats://127.0.0.1:4222)",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
        },
        "x-ccc-streams": {
            "CCC_COMMANDS": {
                "subjects": ["ccc.cmd.>"],
                "retention": "workqueue",
                "consumer": {"durable": domain, "filter": f"ccc.cmd.{domain}.>", "ack": "explicit"},
            },
            "CCC_EVENTS": {"subjects": ["ccc.evt.>"], "retention": "limits"},
        },
        "x-ccc-state": {"kv_bucket": f"ccc_{domain}", "object_store": f"ccc_{domain}"},
    }
    writer.add(
        f"{dirname}/asyncapi.yaml",
        "# GENERATED by tools/gen_proto.py: do not edit.\n"
        + yaml.dump(doc, Dumper=_NoAliases, sort_keys=True, allow_unicode=True, width=100),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "proto")
    parser.add_argument("--services-dir", type=Path, default=ROOT / "services")
    args = parser.parse_args()
    writer = Writer(args.out)
    common = common_models()
    for model, name in common.items():
        writer.add(
            f"common/{name}.schema.json",
            dump_json(model_schema(model, "validation", f"ccc/common/{name}.schema.json")),
        )
    dirs = {"common"}
    for dirname, service in discover_services(args.services_dir):
        service_documents(dirname, service, common, writer)
        dirs.add(dirname)
    writer.commit(dirs)
    print(f"proto/: {len(common)} common contracts, {len(dirs) - 1} service document(s)")


if __name__ == "__main__":
    main()
