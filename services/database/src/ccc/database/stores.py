"""Where backup objects live: the fleet's JetStream object store, or S3 when configured.

``CCC_BACKUP_URL=s3://bucket/prefix`` (with ``CCC_S3_ENDPOINT_URL`` for MinIO, Ceph
and the like; credentials from the usual AWS environment or instance profile) sends new
backups to S3. Each backup record names its store, so backups taken before a change
of setting still restore from where they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any, Protocol
from urllib.parse import urlparse

from nats.js.errors import ObjectNotFoundError

from ccc.common import NotFound, Unavailable
from ccc.common.state import Blobs

from .settings import settings

MULTIPART_CHUNK = 16 * 1024 * 1024


class Store(Protocol):
    kind: str

    async def put(self, name: str, reader: io.RawIOBase) -> None: ...

    async def get_into(self, name: str, writer: io.RawIOBase) -> None: ...

    async def delete(self, name: str) -> None: ...


class NatsStore:
    kind = "nats"

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    async def put(self, name: str, reader: io.RawIOBase) -> None:
        await self.blobs.store.put(name, reader)  # type: ignore[arg-type]

    async def get_into(self, name: str, writer: io.RawIOBase) -> None:
        try:
            await self.blobs.store.get(name, writeinto=writer)  # type: ignore[arg-type]
        except ObjectNotFoundError as exc:
            raise NotFound(f"backup object {name!r} is missing from the object store") from exc

    async def delete(self, name: str) -> None:
        await self.blobs.delete(name)


class S3Store:
    """boto3 in worker threads: ``upload_fileobj`` streams a pipe as a multipart upload
    (an upload that fails is aborted, so no partial object appears)."""

    kind = "s3"

    def __init__(self, url: str, endpoint_url: str | None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise Unavailable(f"CCC_BACKUP_URL {url!r} must look like s3://bucket/prefix")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.endpoint_url = endpoint_url
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}),
            )
        return self._client

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    async def put(self, name: str, reader: io.RawIOBase) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_chunksize=MULTIPART_CHUNK, use_threads=False)
        await self._call(
            self.client().upload_fileobj, reader, self.bucket, self.key(name), Config=config
        )

    async def get_into(self, name: str, writer: io.RawIOBase) -> None:
        from botocore.exceptions import ClientError

        try:
            await self._call(self.client().download_fileobj, self.bucket, self.key(name), writer)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise NotFound(
                    f"backup object s3://{self.bucket}/{self.key(name)} is missing"
                ) from exc
            raise

    async def delete(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self._call(self.client().delete_object, Bucket=self.bucket, Key=self.key(name))

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except EndpointConnectionError as exc:
            raise Unavailable(f"S3 endpoint is unreachable: {exc}") from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey"):
                raise
            raise Unavailable(f"S3 refused the request ({code}): {exc}") from exc
        except BotoCoreError as exc:
            raise Unavailable(f"S3 failed: {exc}") from exc


_s3: dict[tuple[str, str | None], S3Store] = {}


def s3_store(url: str) -> S3Store:
    key = (url, settings.s3_endpoint_url)
    if key not in _s3:
        _s3[key] = S3Store(url, settings.s3_endpoint_url)
    return _s3[key]


def for_new_backup(blobs: Blobs) -> tuple[Store, str]:
    """The store new backups go to, and its location prefix for the record."""
    if settings.backup_url:
        store = s3_store(settings.backup_url)
        return store, f"s3://{store.bucket}/{store.prefix}".rstrip("/")
    return NatsStore(blobs), "nats"


def for_record(blobs: Blobs, location: str) -> Store:
    if location == "nats":
        return NatsStore(blobs)
    return s3_store(location)
