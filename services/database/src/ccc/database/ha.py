"""HA manifests: CloudNativePG for Kubernetes, Patroni for VMs, each validated.

CloudNativePG: a ``Cluster`` (instances, storage, PostgreSQL parameters, Barman
object-store backups with WAL archiving), a ``ScheduledBackup`` and a PgBouncer
``Pooler``. They are validated against the CRDs' ``openAPIV3Schema`` when the
operator's CRD files are given (``CCC_CNPG_CRD_DIR``: the ``postgresql.cnpg.io_*.yaml``
of the installed release); otherwise against ``CNPG_SCHEMAS`` below, which transcribes
from the CloudNativePG API reference the constraints of every field generated here.
The answer names which one was used.

Patroni: one YAML per node, validated by Patroni's own validator (``patroni
--validate-config``). Its checks of the local filesystem (``bin_dir``, ``data_dir``)
describe the target VM, not this one, so they are reported as notes, not errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from jsonschema import Draft7Validator
from pydantic import BaseModel, Field

from ccc.common import Invalid

from .models import Host, Ident
from .settings import settings

K8sName = Annotated[
    str, Field(min_length=1, max_length=50, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")]
ParamValue = Annotated[str, Field(max_length=200, pattern=r"^[^\n\r]*$")]


class ObjectStoreBackup(BaseModel):
    destination_path: str = Field(pattern=r"^(s3|gs|https?)://[^\s]+$")
    endpoint_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    credentials_secret: K8sName = Field(
        description="Secret with ACCESS_KEY_ID and ACCESS_SECRET_KEY"
    )
    retention_days: int = Field(30, ge=1, le=3650)
    schedule: str = Field(
        "0 0 3 * * *", description="six-field cron (seconds first) of base backups"
    )
    compression: Literal["gzip", "bzip2", "snappy", "lz4", "xz", "zstd"] = "gzip"


class PoolerSpec(BaseModel):
    instances: int = Field(2, ge=1, le=50)
    pool_mode: Literal["session", "transaction"] = "transaction"
    max_client_conn: int = Field(1000, ge=1, le=100_000)
    default_pool_size: int = Field(20, ge=1, le=10_000)
    type: Literal["rw", "ro"] = "rw"


class CnpgRequest(BaseModel):
    name: K8sName
    namespace: K8sName = "default"
    instances: int = Field(3, ge=1, le=20)
    postgres_image: str = Field(
        "ghcr.io/cloudnative-pg/postgresql:17", pattern=r"^[a-z0-9./:@_\-]+$", max_length=200
    )
    storage_size: Quantity = "10Gi"
    storage_class: K8sName | None = None
    wal_storage_size: Quantity | None = None
    database: Ident = "app"
    owner: Ident = "app"
    parameters: dict[Ident, ParamValue] = Field(default_factory=dict, max_length=100)
    synchronous_replicas: int = Field(0, ge=0, le=19)
    backup: ObjectStoreBackup | None = None
    pooler: PoolerSpec | None = None


class PatroniRequest(BaseModel):
    scope: K8sName
    nodes: list[Host] = Field(min_length=1, max_length=20, description="node addresses")
    etcd_hosts: list[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?:[0-9]{1,5}$")]
    ] = Field(min_length=1, max_length=9, description="host:port")
    postgres_version: int = Field(15, ge=12, le=18)
    data_dir: str = Field("/var/lib/postgresql/{version}/main", pattern=r"^/[^\s]*$")
    bin_dir: str = Field("/usr/lib/postgresql/{version}/bin", pattern=r"^/[^\s]*$")
    parameters: dict[Ident, ParamValue] = Field(default_factory=dict, max_length=100)
    synchronous_mode: bool = False


class Document(BaseModel):
    kind: str
    name: str
    yaml: str


class Manifests(BaseModel):
    documents: list[Document]
    yaml: str = Field(description="all documents, '---'-separated")
    validated_against: str
    notes: list[str] = Field(default_factory=list)


# -- CloudNativePG -----------------------------------------------------------------------

_REF = {
    "type": "object",
    "required": ["name", "key"],
    "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
}


def _resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "postgresql.cnpg.io/v1"},
            "kind": {"const": kind},
            "metadata": _META,
            "spec": spec,
        },
    }


CNPG_SCHEMAS: dict[str, dict[str, Any]] = {
    "Cluster": _resource(
        "Cluster",
        {
            "type": "object",
            "required": ["instances"],
            "additionalProperties": False,
            "properties": {
                "instances": {"type": "integer", "minimum": 1},
                "imageName": {"type": "string"},
                "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
                "minSyncReplicas": {"type": "integer", "minimum": 0},
                "maxSyncReplicas": {"type": "integer", "minimum": 0},
                "postgresql": {
                    "type": "object",
                    "properties": {
                        "parameters": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "bootstrap": {
                    "type": "object",
                    "properties": {
                        "initdb": {
                            "type": "object",
                            "properties": {
                                "database": {"type": "string"},
                                "owner": {"type": "string"},
                            },
                        }
                    },
                },
                "storage": {
                    "type": "object",
                    "properties": {
                        "size": {"type": "string"},
                        "storageClass": {"type": "string"},
                    },
                },
                "walStorage": {"type": "object", "properties": {"size": {"type": "string"}}},
                "monitoring": {
                    "type": "object",
                    "properties": {"enablePodMonitor": {"type": "boolean"}},
                },
                "backup": {
                    "type": "object",
                    "properties": {
                        "retentionPolicy": {"type": "string", "pattern": "^[1-9][0-9]*[dwm]$"},
                        "barmanObjectStore": {
                            "type": "object",
                            "required": ["destinationPath"],
                            "properties": {
                                "destinationPath": {"type": "string", "minLength": 1},
                                "endpointURL": {"type": "string"},
                                "s3Credentials": {
                                    "type": "object",
                                    "properties": {
                                        "accessKeyId": _REF,
                                        "secretAccessKey": _REF,
                                    },
                                },
                                "wal": {
                                    "type": "object",
                                    "properties": {
                                        "compression": {
                                            "enum": ["bzip2", "gzip", "lz4", "snappy", "xz", "zstd"]
                                        }
                                    },
                                },
                                "data": {
                                    "type": "object",
                                    "properties": {
                                        "compression": {
                                            "enum": ["bzip2", "gzip", "lz4", "snappy", "xz", "zstd"]
                                        }
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    ),
    "ScheduledBackup": _resource(
        "ScheduledBackup",
        {
            "type": "object",
            "required": ["cluster", "schedule"],
            "properties": {
                "cluster": {"type": "object", "required": ["name"]},
                "schedule": {"type": "string"},
                "backupOwnerReference": {"enum": ["none", "self", "cluster"]},
                "method": {"enum": ["barmanObjectStore", "volumeSnapshot", "plugin"]},
                "immediate": {"type": "boolean"},
            },
        },
    ),
    "Pooler": _resource(
        "Pooler",
        {
            "type": "object",
            "required": ["cluster", "pgbouncer"],
            "properties": {
                "cluster": {"type": "object", "required": ["name"]},
                "instances": {"type": "integer", "minimum": 0},
                "type": {"enum": ["rw", "ro", "r"]},
                "pgbouncer": {
                    "type": "object",
                    "properties": {
                        "poolMode": {"enum": ["session", "transaction"]},
                        "parameters": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                    },
                },
            },
        },
    ),
}
CRD_FILES = {
    "Cluster": "postgresql.cnpg.io_clusters.yaml",
    "ScheduledBackup": "postgresql.cnpg.io_scheduledbackups.yaml",
    "Pooler": "postgresql.cnpg.io_poolers.yaml",
}


def _crd_schema(kind: str, crd_dir: Path) -> dict[str, Any]:
    """The v1 ``openAPIV3Schema`` of a CRD file (Kubernetes' ``x-`` keys are ignored)."""
    crd = yaml.safe_load((crd_dir / CRD_FILES[kind]).read_text())
    for version in crd["spec"]["versions"]:
        if version["name"] == "v1":
            return dict(version["schema"]["openAPIV3Schema"])
    raise Invalid(f"{CRD_FILES[kind]} has no v1 version")


def _validate(docs: list[dict[str, Any]]) -> str:
    crd_dir = settings.cnpg_crd_dir
    problems: list[dict[str, str]] = []
    for doc in docs:
        kind = doc["kind"]
        schema = _crd_schema(kind, crd_dir) if crd_dir else CNPG_SCHEMAS[kind]
        for err in Draft7Validator(schema).iter_errors(doc):
            path = ".".join(str(p) for p in err.absolute_path)
            problems.append({"loc": f"{kind}.{path}", "msg": err.message, "type": "schema"})
    if problems:
        raise Invalid(
            f"generated manifests fail schema validation: {problems[0]['loc']}: "
            f"{problems[0]['msg']}",
            errors=problems,
        )
    if crd_dir:
        return f"CloudNativePG CRDs in {crd_dir}"
    return (
        "CloudNativePG API constraints of the generated fields (set CCC_CNPG_CRD_DIR for the CRDs)"
    )


def cloudnativepg(req: CnpgRequest) -> Manifests:
    meta = {"name": req.name, "namespace": req.namespace}
    parameters = {"max_connections": "200", "shared_buffers": "256MB", **req.parameters}
    if "pg_stat_statements.max" not in parameters:
        parameters["pg_stat_statements.max"] = "10000"  # CNPG loads the library for it
    spec: dict[str, Any] = {
        "instances": req.instances,
        "imageName": req.postgres_image,
        "primaryUpdateStrategy": "unsupervised",
        "postgresql": {"parameters": parameters},
        "bootstrap": {"initdb": {"database": req.database, "owner": req.owner}},
        "storage": {"size": req.storage_size},
        "monitoring": {"enablePodMonitor": True},
    }
    if req.storage_class:
        spec["storage"]["storageClass"] = req.storage_class
    if req.wal_storage_size:
        spec["walStorage"] = {"size": req.wal_storage_size}
    if req.synchronous_replicas:
        if req.synchronous_replicas >= req.instances:
            raise Invalid("synchronous_replicas must be fewer than instances")
        spec["minSyncReplicas"] = spec["maxSyncReplicas"] = req.synchronous_replicas
    docs: list[dict[str, Any]] = [
        {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": meta, "spec": spec}
    ]
    if req.backup is not None:
        b = req.backup
        store: dict[str, Any] = {
            "destinationPath": b.destination_path,
            "s3Credentials": {
                "accessKeyId": {"name": b.credentials_secret, "key": "ACCESS_KEY_ID"},
                "secretAccessKey": {"name": b.credentials_secret, "key": "ACCESS_SECRET_KEY"},
            },
            "wal": {"compression": b.compression},
            "data": {"compression": b.compression},
        }
        if b.endpoint_url:
            store["endpointURL"] = b.endpoint_url
        spec["backup"] = {"retentionPolicy": f"{b.retention_days}d", "barmanObjectStore": store}
        if len(b.schedule.split()) != 6:
            raise Invalid(
                "backup.schedule is six-field cron with seconds first, e.g. '0 0 3 * * *'"
            )
        docs.append(
            {
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "ScheduledBackup",
                "metadata": {"name": f"{req.name}-daily", "namespace": req.namespace},
                "spec": {
                    "cluster": {"name": req.name},
                    "schedule": b.schedule,
                    "backupOwnerReference": "self",
                    "method": "barmanObjectStore",
                    "immediate": True,
                },
            }
        )
    if req.pooler is not None:
        p = req.pooler
        docs.append(
            {
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "Pooler",
                "metadata": {"name": f"{req.name}-pooler-{p.type}", "namespace": req.namespace},
                "spec": {
                    "cluster": {"name": req.name},
                    "instances": p.instances,
                    "type": p.type,
                    "pgbouncer": {
                        "poolMode": p.pool_mode,
                        "parameters": {
                            "max_client_conn": str(p.max_client_conn),
                            "default_pool_size": str(p.default_pool_size),
                        },
                    },
                },
            }
        )
    validated = _validate(docs)
    return _manifests(docs, validated, [])


def _manifests(docs: list[dict[str, Any]], validated: str, notes: list[str]) -> Manifests:
    rendered = [yaml.safe_dump(d, sort_keys=False) for d in docs]
    return Manifests(
        documents=[
            Document(kind=str(d.get("kind", "patroni")), name=str(_name(d)), yaml=text)
            for d, text in zip(docs, rendered, strict=True)
        ],
        yaml="---\n" + "---\n".join(rendered),
        validated_against=validated,
        notes=notes,
    )


def _name(doc: dict[str, Any]) -> Any:
    return doc.get("metadata", {}).get("name") or doc.get("name")


# -- Patroni -------------------------------------------------------------------------------

_LOCAL_ONLY = ("postgresql.bin_dir", "postgresql.data_dir")
_UNRESOLVED = ("Name or service not known", "Temporary failure in name resolution")


def patroni(req: PatroniRequest) -> Manifests:
    from patroni.validator import populate_validate_params, schema

    for host in req.etcd_hosts:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise Invalid(f"etcd host {host!r} must look like host:port")
    version = req.postgres_version
    parameters = {
        "max_connections": 200,
        "wal_level": "replica",
        "hot_standby": "on",
        "max_wal_senders": 10,
        "max_replication_slots": 10,
        "shared_preload_libraries": "pg_stat_statements",
        **req.parameters,
    }
    docs: list[dict[str, Any]] = []
    for index, node in enumerate(req.nodes, start=1):
        address = node
        docs.append(
            {
                "scope": req.scope,
                "namespace": "/service/",
                "name": f"{req.scope}-{index}",
                "restapi": {"listen": "0.0.0.0:8008", "connect_address": f"{address}:8008"},
                "etcd3": {"hosts": list(req.etcd_hosts)},
                "bootstrap": {
                    "dcs": {
                        "ttl": 30,
                        "loop_wait": 10,
                        "retry_timeout": 10,
                        "maximum_lag_on_failover": 1048576,
                        "synchronous_mode": req.synchronous_mode,
                        "postgresql": {"use_pg_rewind": True, "parameters": parameters},
                    },
                    "initdb": [{"encoding": "UTF8"}, "data-checksums"],
                },
                "postgresql": {
                    "listen": "0.0.0.0:5432",
                    "connect_address": f"{address}:5432",
                    "data_dir": req.data_dir.format(version=version),
                    "bin_dir": req.bin_dir.format(version=version),
                    "pgpass": "/tmp/pgpass0",
                    "authentication": {
                        "superuser": {"username": "postgres"},
                        "replication": {"username": "replicator"},
                    },
                    "pg_hba": [
                        "host replication replicator 0.0.0.0/0 scram-sha-256",
                        "host all all 0.0.0.0/0 scram-sha-256",
                    ],
                },
                "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
            }
        )
    populate_validate_params(ignore_listen_port=True)
    errors: list[dict[str, str]] = []
    notes = [
        "no password is written: Patroni reads PATRONI_SUPERUSER_PASSWORD and "
        "PATRONI_REPLICATION_PASSWORD from each node's environment"
    ]
    for doc in docs:
        for message in schema(doc):
            if message.startswith(_LOCAL_ONLY) or any(u in message for u in _UNRESOLVED):
                note = f"{doc['name']}: {message.strip()} (here; check on the VM)"
                if note not in notes:
                    notes.append(note)
            else:
                errors.append({"loc": f"{doc['name']}", "msg": message, "type": "patroni"})
    if errors:
        raise Invalid(f"Patroni rejects the configuration: {errors[0]['msg']}", errors=errors)
    return _manifests(docs, "patroni.validator (patroni --validate-config)", notes)
