"""An endpoint's description: its models, HTTP route, roles and timeout, and how it decodes.

The metadata announced through NATS micro discovery is everything the gateway needs
to build a route, check roles and publish an OpenAPI operation: the gateway carries no
domain code, only what endpoints say of themselves here.
"""

from __future__ import annotations

import functools
import inspect
import json
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from . import subjects
from .binary import Binary
from .errors import BadRequest, Invalid
from .roles import ROLES

Handler = Callable[[Any, Any], Awaitable[Any]]


@dataclass
class EndpointSpec:
    domain: str
    op: str
    handler: Handler
    request_model: type[BaseModel]
    response_type: Any
    http_method: str | None
    http_path: str | None
    roles: frozenset[str]
    timeout: float
    operation: bool = False
    resumable: bool = False
    streams: bool = False
    precheck: Handler | None = None
    description: str = ""
    _response_adapter: TypeAdapter[Any] | None = field(default=None, repr=False)

    @functools.cached_property
    def subject(self) -> str:
        return subjects.request_subject(self.domain, self.op)

    @functools.cached_property
    def name(self) -> str:
        """Name under NATS micro: endpoint names allow no dots."""
        return self.op.replace(".", "_")

    def metadata(self) -> dict[str, str]:
        meta = {
            "op": self.op,
            "roles": ",".join(sorted(self.roles)),
            "timeout": str(self.timeout),
            "kind": "operation" if self.operation else "request",
            "description": self.description,
            "request_schema": json.dumps(self.request_model.model_json_schema()),
        }
        if self.http_method and self.http_path:
            meta["http"] = f"{self.http_method} {self.http_path}"
        if self.streams:
            meta["stream"] = "sse"
        if self.response_type is Binary:
            meta["response_content"] = "binary"
        elif self.response_type is not None and not self.operation:
            json_part = json_answer_type(self.response_type)
            if json_part is not self.response_type:  # ``Model | Binary``: either kind
                meta["response_content"] = "json-or-binary"
            meta["response_schema"] = json.dumps(TypeAdapter(json_part).json_schema())
        return meta

    @property
    def response_adapter(self) -> TypeAdapter[Any]:
        if self._response_adapter is None:
            self._response_adapter = TypeAdapter(self.response_type)
        return self._response_adapter

    def parse(self, data: bytes, headers: Mapping[str, str] | None) -> BaseModel:
        """Decode a request: JSON body, with path and query parameters merged over it."""
        params = headers.get(subjects.PARAMS_HEADER) if headers else None
        try:
            if params is None:  # pydantic-core directly: the model method adds 0.5 µs
                return self.request_model.__pydantic_validator__.validate_json(data or b"{}")  # type: ignore[no-any-return]
            try:
                body = json.loads(data) if data.strip() else {}
            except ValueError as exc:
                raise BadRequest(f"request body is not valid JSON: {exc}") from exc
            if not isinstance(body, dict):
                raise Invalid(
                    "request body must be a JSON object",
                    errors=[{"loc": "", "msg": "expected a JSON object", "type": "object_type"}],
                )
            body.update(json.loads(params))
            return self.request_model.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc) from exc

    def dump(self, result: Any) -> bytes:
        if isinstance(result, BaseModel):
            return result.__pydantic_serializer__.to_json(result)
        if self.response_type is None:
            return json.dumps(result, default=str).encode()
        return self.response_adapter.dump_json(result)


def json_answer_type(response_type: Any) -> Any:
    """The JSON part of an answer type: ``Model | Binary`` gives ``Model``; a type
    without ``Binary`` is returned as it is."""
    members = typing.get_args(response_type)
    if typing.get_origin(response_type) not in (typing.Union, types.UnionType):
        return response_type
    rest = tuple(m for m in members if m is not Binary)
    if len(rest) == len(members):
        return response_type
    return rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007 - built at run time


def validation_error(exc: ValidationError) -> BadRequest | Invalid:
    """Pydantic's error as 400 (not JSON at all) or 422 naming each field path."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return BadRequest(f"request body is not valid JSON: {errors[0]['msg']}")
    fields = [
        {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in errors
    ]
    where = ", ".join(f"{f['loc'] or '(body)'}: {f['msg']}" for f in fields[:5])
    return Invalid(f"request does not match the schema: {where}", errors=fields)


def parse_http(http: str | None, domain: str, op: str) -> tuple[str | None, str | None]:
    if http is None:
        return subjects.default_route(domain, op)
    if http == "":
        return None, None
    method, _, path = http.partition(" ")
    method = method.upper()
    if method not in {"GET", "POST", "PUT", "PATCH", "DELETE"} or not path.startswith("/"):
        raise ValueError(f"http route {http!r} must look like 'POST /v1/...'")
    return method, path


def _type_hints(handler: Handler) -> dict[str, Any]:
    """The handler's annotations, resolved even when some name (say ``Context``) was
    imported only inside a function: only the request and return types matter here."""
    try:
        return typing.get_type_hints(handler)
    except NameError:
        namespace = {**handler.__globals__, **inspect.getclosurevars(handler).nonlocals}
        hints: dict[str, Any] = {}
        for name, annotation in inspect.get_annotations(handler).items():
            try:
                hints[name] = (
                    eval(annotation, namespace) if isinstance(annotation, str) else annotation
                )
            except NameError:
                continue
        return hints


def build_spec(
    domain: str,
    op: str,
    handler: Handler,
    *,
    http: str | None,
    roles: Iterable[str],
    timeout: float,
    operation: bool,
    resumable: bool,
    streams: bool = False,
    precheck: Handler | None = None,
) -> EndpointSpec:
    """Read request and response types from the handler's annotations."""
    subjects.check_op(op)
    hints = _type_hints(handler)
    params = list(inspect.signature(handler).parameters)
    if not params:
        raise TypeError(f"handler of {op} must take (request, ctx)")
    request_model = hints.get(params[0])
    if not (isinstance(request_model, type) and issubclass(request_model, BaseModel)):
        raise TypeError(f"first parameter of the {op} handler must be a pydantic model")
    response_type = hints.get("return")
    if response_type is type(None):
        response_type = None
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; roles are {ROLES}")
    method, path = parse_http(http, domain, op)
    return EndpointSpec(
        domain=domain,
        op=op,
        handler=handler,
        request_model=request_model,
        response_type=response_type,
        http_method=method,
        http_path=path,
        roles=frozenset(roles),
        timeout=timeout,
        operation=operation,
        resumable=resumable,
        streams=streams,
        precheck=precheck,
        description=inspect.getdoc(handler) or "",
    )
