"""multipart/form-data at the edge becomes the JSON every endpoint takes.

Form fields stay strings (a name used more than once becomes a list); files under a
name always form a list of ``{"filename", "content_type", "content_base64"}``. The service validates
the result with its pydantic model like any JSON body. The whole message must still fit
the bus's payload limit, so files above ~700 KB (base64 grows a third) get a 413 that
says so.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from ccc.common.errors import BadRequest, PayloadTooLarge

from .http import Receive, Scope, form_fields, replay


def urlencoded_to_json(body: bytes) -> bytes:
    """``curl -d '{...}'`` sends JSON labelled form-urlencoded; a real form (``a=1&b=2``)
    becomes a JSON object of strings (lists for repeated names)."""
    stripped = body.lstrip()
    if stripped[:1] in (b"{", b"["):
        return body  # JSON (or broken JSON, for the service to refuse with 400)
    return json.dumps(form_fields(body.decode("latin-1"))).encode()


async def multipart_to_json(scope: Scope, receive: Receive, body: bytes, limit: int) -> bytes:
    request = Request(scope, replay(body, receive))
    try:
        form = await request.form(max_files=100, max_fields=1000)
    except Exception as exc:  # starlette raises its own MultiPartException subclasses
        raise BadRequest(f"the multipart body cannot be read: {exc}") from exc
    out: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):  # files are always a list, even one
                out.setdefault(name, []).append(
                    {
                        "filename": value.filename,
                        "content_type": value.content_type,
                        "content_base64": base64.b64encode(await value.read()).decode(),
                    }
                )
                continue
            item: Any = value
            if name in out:
                existing = out[name]
                out[name] = [*existing, item] if isinstance(existing, list) else [existing, item]
            else:
                out[name] = item
    finally:
        await form.close()
    encoded = json.dumps(out).encode()
    if len(encoded) > limit:
        raise PayloadTooLarge(
            f"the upload is {len(encoded)} bytes once encoded for the bus (base64), over the "
            f"{limit}-byte limit; send smaller files or several requests"
        )
    return encoded
