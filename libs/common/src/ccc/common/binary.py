"""A non-JSON answer (audio, an image, a file): raw bytes with their media type.

A handler returns ``Binary(data=..., content_type="audio/mpeg")``; the reply carries the
bytes as they are with a ``Content-Type`` header, and the gateway answers with that type.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Binary(BaseModel):
    data: bytes
    content_type: str = Field("application/octet-stream", pattern=r"^[\w.+-]+/[\w.+-]+$")
