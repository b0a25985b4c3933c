"""S3 storage (boto3) for any S3-compatible server.

boto3 blocks, so every call runs on a bounded thread pool and the event loop never waits on
S3. Bundles are written with multipart upload: memory holds at most one part. botocore's
errors are mapped here, once, to ``ObjectMissing`` / ``TransientStorageError`` /
``StorageError``; nothing above this module sees a botocore exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from delineate.errors import ObjectMissing, StorageError, TransientStorageError
from delineate.storage.base import CHUNK_SIZE, ObjectInfo, ObjectWriter, PresignedUrl, Storage
from delineate.storage.threads import BlockingCalls

log = logging.getLogger("delineate.s3")
T = TypeVar("T")

MIN_PART_SIZE = 5 * 1024 * 1024
_TRANSIENT_CODES = {
    "SlowDown",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
    "503",
    "500",
}
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def map_error(exc: Exception, what: str) -> StorageError:
    """One place that classifies botocore's errors."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _MISSING_CODES:
            return ObjectMissing(f"{what}: not found")
        if code in _TRANSIENT_CODES or status >= 500:
            return TransientStorageError(f"{what}: S3 answered {code or status}")
        return StorageError(f"{what}: S3 refused ({code or status})")
    # Connection refused/reset, timeouts: BotoCoreError subclasses (and OSError beneath).
    return TransientStorageError(f"{what}: S3 unreachable ({type(exc).__name__})")


class S3Storage(Storage):
    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        region: str,
        endpoint: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        force_path_style: bool,
        create_bucket: bool,
        part_size: int,
        max_threads: int,
        timeout_s: float,
    ) -> None:
        self.bucket = bucket
        self._create_bucket = create_bucket
        self._part_size = max(part_size, MIN_PART_SIZE)
        self._threads = BlockingCalls(max_threads, "s3")
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        addressing = "path" if force_path_style else "auto"

        def client(connect: float, read: float, attempts: int) -> Any:
            config = Config(
                s3={"addressing_style": addressing},
                signature_version="s3v4",
                connect_timeout=connect,
                read_timeout=read,
                retries={"max_attempts": attempts, "mode": "standard"},
                max_pool_connections=max_threads,
            )
            return session.client("s3", endpoint_url=endpoint, config=config)

        self._s3 = client(timeout_s, timeout_s * 3, 2)
        # Health checks must answer fast and never hang: one try, short timeouts.
        self._probe = client(1.0, 1.0, 1)

    async def _call(self, what: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
        try:
            return await self._threads.run(fn, **kwargs)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise map_error(exc, what) from exc

    async def start(self) -> None:
        self._threads.start()
        if not self._create_bucket:
            return
        try:
            await self._call("head bucket", self._s3.head_bucket, Bucket=self.bucket)
        except ObjectMissing:
            log.info("creating bucket %s", self.bucket)
            await self._call("create bucket", self._s3.create_bucket, Bucket=self.bucket)

    async def stop(self) -> None:
        self._threads.stop()

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            reply = await self._call(
                f"head {key}", self._s3.head_object, Bucket=self.bucket, Key=key
            )
        except ObjectMissing:
            return None
        return ObjectInfo(key=key, size=int(reply["ContentLength"]))

    async def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        reply = await self._call(f"get {key}", self._s3.get_object, Bucket=self.bucket, Key=key)
        body = reply["Body"]
        try:
            while chunk := await self._call(f"read {key}", body.read, amt=chunk_size):
                yield chunk
        finally:
            body.close()

    async def writer(self, key: str) -> ObjectWriter:
        reply = await self._call(
            f"start upload {key}",
            self._s3.create_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            ContentType="application/zip",
        )
        return _MultipartWriter(self, key, reply["UploadId"])

    async def delete(self, key: str) -> None:
        await self._call(f"delete {key}", self._s3.delete_object, Bucket=self.bucket, Key=key)

    async def presign(self, key: str, expires_in_s: int) -> PresignedUrl:
        # Signing is local computation: no request, so no thread needed.
        url = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in_s
        )
        return PresignedUrl(url=url, expires_at=time.time() + expires_in_s)

    async def check(self) -> bool:
        try:
            await self._call("health", self._probe.head_bucket, Bucket=self.bucket)
        except StorageError:
            return False
        return True


class _MultipartWriter(ObjectWriter):
    def __init__(self, storage: S3Storage, key: str, upload_id: str) -> None:
        self._storage, self._key, self._upload_id = storage, key, upload_id
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._size = 0
        self._open = True

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self._size += len(data)
        if len(self._buffer) >= self._storage._part_size:
            await self._flush()

    async def _flush(self) -> None:
        number = len(self._parts) + 1
        body, self._buffer = bytes(self._buffer), bytearray()
        reply = await self._storage._call(
            f"upload part {number} of {self._key}",
            self._storage._s3.upload_part,
            Bucket=self._storage.bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
        )
        self._parts.append({"PartNumber": number, "ETag": reply["ETag"]})

    async def complete(self) -> int:
        if self._buffer or not self._parts:
            await self._flush()
        await self._storage._call(
            f"complete {self._key}",
            self._storage._s3.complete_multipart_upload,
            Bucket=self._storage.bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._open = False
        return self._size

    async def abort(self) -> None:
        if not self._open:
            return
        self._open = False
        self._buffer = bytearray()
        try:
            await self._storage._call(
                f"abort {self._key}",
                self._storage._s3.abort_multipart_upload,
                Bucket=self._storage.bucket,
                Key=self._key,
                UploadId=self._upload_id,
            )
        except StorageError as exc:
            log.warning("could not abort the upload of %s: %s", self._key, exc)
