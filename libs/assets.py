"""The asset store: where every upload and every output lives, under a permanent public base.

MEGA never holds a provider's expiring URL: outputs are copied here before a step ends.
Two stores satisfy `AssetStore`: the local filesystem (served by the gateway under
`/assets`, presigned PUTs verified by HMAC) and an S3-compatible bucket (Cloudflare R2
in production) through boto3.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import mimetypes
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol, TypedDict
from urllib.parse import urlencode, urlparse

from libs.errors import InvalidInputError, ServiceUnavailableError
from libs.fetch import FetchPolicy, fetch
from libs.settings import Settings


@dataclass(frozen=True)
class StoredAsset:
    key: str
    url: str
    content_type: str
    bytes: int


def safe_key(key: str) -> str:
    """Reject keys that could escape the store (`..`, absolute paths, odd characters)."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or any(part in ("", ".", "..") for part in path.parts) or "\\" in key:
        raise InvalidInputError(f"invalid asset key {key!r}", code="INVALID_KEY")
    return str(path)


def new_key(folder: str, content_type: str, filename: str | None = None) -> str:
    """`<folder>/<uuid><ext>`: unique, never guessable from the customer's file name."""
    folder = "".join(c for c in (folder or "uploads") if c.isalnum() or c in "-_/").strip("/") or "uploads"
    ext = mimetypes.guess_extension(content_type or "") or (PurePosixPath(filename).suffix if filename else "")
    if ext == ".jpe":
        ext = ".jpg"
    return f"{folder}/{uuid.uuid4().hex}{ext or '.bin'}"


class AssetStore(Protocol):
    public_base: str

    async def put_bytes(
        self, data: bytes, *, folder: str, content_type: str, key: str | None = None, filename: str | None = None
    ) -> StoredAsset: ...

    async def get_bytes(self, url_or_key: str) -> bytes: ...

    def presign_put(self, key: str, content_type: str, expires_s: int = 600) -> str: ...

    def public_url(self, key: str) -> str: ...

    def is_ours(self, url: str) -> bool: ...


async def copy_from_url(store: AssetStore, url: str, *, folder: str, policy: FetchPolicy) -> StoredAsset:
    """Re-host a remote file (a provider output, a customer's link) in the store, through the fetch guard."""
    data, content_type = await fetch(url, policy)
    if content_type in ("application/octet-stream", "binary/octet-stream", ""):
        content_type = mimetypes.guess_type(urlparse(url).path)[0] or content_type
    return await store.put_bytes(data, folder=folder, content_type=content_type)


# A local file this small is written on the event loop: mkdir, write and rename take 0.17 ms for a
# 55 KB still and 0.3 ms for 256 KB on this VM, while a worker thread's hand-off and wake-up cost a run
# ~0.9 ms of its wait for the checkpoint that records the output (docs/bench.md, session 11). Larger
# files (videos: 11 ms for 4 MB) still go to a thread.
INLINE_WRITE_MAX = 256 * 1024


class LocalAssetStore:
    """Files under `root`, public at `public_base` (the gateway serves `/assets`)."""

    def __init__(self, root: Path, public_base: str, signing_secret: str, upload_base: str,
                 fetch_policy: FetchPolicy | None = None) -> None:
        self.root = root
        self.fetch_policy = fetch_policy or FetchPolicy()
        self.public_base = public_base.rstrip("/")
        self.upload_base = upload_base.rstrip("/")
        self._secret = signing_secret.encode()

    def path_of(self, key: str) -> Path:
        return self.root / safe_key(key)

    def public_url(self, key: str) -> str:
        return f"{self.public_base}/{safe_key(key)}"

    def is_ours(self, url: str) -> bool:
        return url.startswith(self.public_base + "/")

    def key_of(self, url_or_key: str) -> str:
        if url_or_key.startswith(self.public_base + "/"):
            return safe_key(url_or_key[len(self.public_base) + 1 :])
        return safe_key(url_or_key)

    def _write(self, key: str, data: bytes) -> None:
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    async def put_bytes(
        self, data: bytes, *, folder: str, content_type: str, key: str | None = None, filename: str | None = None
    ) -> StoredAsset:
        key = safe_key(key) if key else new_key(folder, content_type, filename)
        if len(data) <= INLINE_WRITE_MAX:
            self._write(key, data)
        else:
            await asyncio.to_thread(self._write, key, data)
        return StoredAsset(key=key, url=self.public_url(key), content_type=content_type, bytes=len(data))

    async def get_bytes(self, url_or_key: str) -> bytes:
        if url_or_key.startswith(("http://", "https://")) and not self.is_ours(url_or_key):
            data, _ = await fetch(url_or_key, self.fetch_policy)
            return data
        path = self.path_of(self.key_of(url_or_key))
        if not path.exists():
            raise InvalidInputError(f"asset not found: {url_or_key}", code="ASSET_NOT_FOUND")
        return await asyncio.to_thread(path.read_bytes)

    # presigned PUT: HMAC-SHA256 over key, content type and expiry
    def _signature(self, key: str, content_type: str, expires: int) -> str:
        message = f"PUT\n{key}\n{content_type}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def presign_put(self, key: str, content_type: str, expires_s: int = 600) -> str:
        key = safe_key(key)
        expires = int(time.time()) + expires_s
        query = urlencode({"expires": expires, "content_type": content_type,
                           "sig": self._signature(key, content_type, expires)})
        return f"{self.upload_base}/{key}?{query}"

    def verify_put(self, key: str, content_type: str, expires: int, sig: str) -> bool:
        """True for an unexpired URL made by `presign_put` for exactly this key and type."""
        if expires < int(time.time()):
            return False
        expected = self._signature(safe_key(key), content_type, expires)
        return hmac.compare_digest(expected, sig)


class _Body(Protocol):
    def read(self) -> bytes: ...


class _GotObject(TypedDict):
    Body: _Body


class _S3Client(Protocol):
    """What the S3 store uses of boto3's client (boto3 ships no types)."""

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentType: str, CacheControl: str) -> object: ...

    def get_object(self, *, Bucket: str, Key: str) -> _GotObject: ...

    def generate_presigned_url(self, ClientMethod: str, Params: dict[str, str], ExpiresIn: int) -> str: ...


class S3AssetStore:
    """An S3-compatible bucket (R2 in production) through boto3, run in worker threads."""

    def __init__(self, settings: Settings) -> None:
        import boto3

        self.fetch_policy = FetchPolicy.from_settings(settings)

        if not settings.s3_bucket:
            raise ServiceUnavailableError("S3 store needs MMA_S3_BUCKET", code="R2_NOT_CONFIGURED")
        self.bucket = settings.s3_bucket
        self.public_base = (settings.assets_public_base or f"{settings.s3_endpoint_url}/{self.bucket}").rstrip("/")
        self._client: _S3Client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None,
            aws_secret_access_key=(
                settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
            ),
        )

    def public_url(self, key: str) -> str:
        return f"{self.public_base}/{safe_key(key)}"

    def is_ours(self, url: str) -> bool:
        return url.startswith(self.public_base + "/")

    async def put_bytes(
        self, data: bytes, *, folder: str, content_type: str, key: str | None = None, filename: str | None = None
    ) -> StoredAsset:
        key = safe_key(key) if key else new_key(folder, content_type, filename)
        await asyncio.to_thread(
            self._client.put_object, Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
            CacheControl="public, max-age=31536000, immutable",
        )
        return StoredAsset(key=key, url=self.public_url(key), content_type=content_type, bytes=len(data))

    async def get_bytes(self, url_or_key: str) -> bytes:
        if url_or_key.startswith(("http://", "https://")) and not self.is_ours(url_or_key):
            data, _ = await fetch(url_or_key, self.fetch_policy)
            return data
        key = url_or_key[len(self.public_base) + 1 :] if self.is_ours(url_or_key) else url_or_key
        obj = await asyncio.to_thread(self._client.get_object, Bucket=self.bucket, Key=safe_key(key))
        return await asyncio.to_thread(obj["Body"].read)

    def presign_put(self, key: str, content_type: str, expires_s: int = 600) -> str:
        return self._client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": safe_key(key), "ContentType": content_type},
            ExpiresIn=expires_s,
        )


def build_asset_store(settings: Settings) -> AssetStore:
    if settings.asset_store == "s3":
        return S3AssetStore(settings)
    return LocalAssetStore(
        root=settings.assets_path,
        public_base=settings.assets_base_url,
        signing_secret=settings.upload_signing_secret.get_secret_value(),
        upload_base=f"{settings.gateway_public_url}/api/r2/put",
        fetch_policy=FetchPolicy.from_settings(settings),
    )
