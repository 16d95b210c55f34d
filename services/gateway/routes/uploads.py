"""The R2 routes of ROUTES.md on our asset store, the multipart image upload, `/assets`, and the
download fallback `/public/download`.

Nothing is stored without its type sniffed from its bytes (images decoded in full, once,
in a worker thread so the event loop stays free), so the asset domain never serves HTML or
a script someone uploaded.
"""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from libs.assets import LocalAssetStore, StoredAsset, copy_from_url, new_key, safe_key
from libs.errors import ForbiddenError, InvalidInputError, MmaError, NotFoundError, ServiceUnavailableError
from libs.fetch import FetchPolicy, fetch
from services.gateway.auth.identity import Identity
from services.gateway.bodies import PassFields, first
from services.gateway.deps import GatewayDeps
from services.gateway.images import IMAGE_TYPES, VIDEO_TYPES, decode_upload, inspect_media
from services.gateway.routes.common import get_deps, identity, request_id

router = APIRouter(tags=["uploads"])
PRESIGN_EXPIRES_S = 600


class TooLargeError(MmaError):
    code = "FILE_TOO_LARGE"
    http_status = 413


def folder_of(kind: str | None, folder: str | None) -> str:
    return f"uploads/{first(folder, kind) or 'misc'}"


def stored(asset: StoredAsset, **extra: object) -> dict[str, object]:
    return {"ok": True, "key": asset.key, "url": asset.url, "publicUrl": asset.url,
            "contentType": asset.content_type, "bytes": asset.bytes, **extra}


async def store_data_url(deps: GatewayDeps, data_url: str, folder: str, filename: str | None) -> StoredAsset:
    data, _declared = await decode_upload(data_url)
    if len(data) > deps.settings.upload_max_bytes:
        raise TooLargeError(f"The file is larger than {deps.settings.upload_max_bytes} bytes.")
    media = await inspect_media(data)
    return await deps.store.put_bytes(data, folder=folder, content_type=media.content_type, filename=filename)


class SignedBody(PassFields):
    dataUrl: str | None = None
    contentType: str | None = None
    fileName: str | None = None
    kind: str | None = None
    folder: str | None = None


@router.post("/api/r2/upload-signed")
async def upload_signed(request: Request, body: SignedBody | None = None, deps: GatewayDeps = Depends(get_deps),
                        who: Identity = Depends(identity)) -> dict[str, object]:
    """With `dataUrl`: store it now. Without: a presigned PUT URL valid for 10 minutes."""
    request.state.failure_code = "UPLOAD_FAILED"
    body = body or SignedBody()
    folder = folder_of(body.kind, body.folder)
    if body.dataUrl:
        asset = await store_data_url(deps, body.dataUrl, folder, body.fileName)
        return stored(asset, requestId=request_id(request), passId=who.pass_id)
    content_type = (first(body.contentType) or mimetypes.guess_type(body.fileName or "")[0] or "").lower()
    if content_type not in IMAGE_TYPES + VIDEO_TYPES:
        raise InvalidInputError("contentType must be an image or video type.", code="INVALID_CONTENT_TYPE")
    key = new_key(folder, content_type, body.fileName)
    upload_url = deps.store.presign_put(key, content_type, PRESIGN_EXPIRES_S)
    public = deps.store.public_url(key)
    return {"ok": True, "key": key, "uploadUrl": upload_url, "publicUrl": public, "url": public,
            "expiresIn": PRESIGN_EXPIRES_S, "contentType": content_type, "requestId": request_id(request),
            "passId": who.pass_id}


@router.put("/api/r2/put/{key:path}", include_in_schema=True)
async def presigned_put(key: str, request: Request, expires: int = 0, content_type: str = "", sig: str = "",
                        deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """The local store's presigned PUT: an HMAC-signed, expiring URL for exactly this key and type."""
    store = deps.store
    if not isinstance(store, LocalAssetStore):
        raise NotFoundError("Uploads go to the bucket directly.", code="NOT_FOUND")
    if not sig or not sig.isascii() or not store.verify_put(key, content_type, expires, sig):
        raise ForbiddenError("The upload URL is invalid or expired.", code="INVALID_SIGNATURE")
    data = await request.body()
    if len(data) > deps.settings.upload_max_bytes:
        raise TooLargeError(f"The file is larger than {deps.settings.upload_max_bytes} bytes.")
    kind = (await inspect_media(data)).content_type
    if kind != content_type and not (kind.startswith("video/") and content_type.startswith("video/")):
        raise InvalidInputError("The file does not match the signed content type.", code="CONTENT_TYPE_MISMATCH")
    asset = await store.put_bytes(data, folder="", content_type=content_type, key=safe_key(key))
    return stored(asset)


class RemoteBody(PassFields):
    sourceUrl: str | None = None
    url: str | None = None
    imageUrl: str | None = None
    videoUrl: str | None = None
    kind: str | None = None
    folder: str | None = None


async def _copy(deps: GatewayDeps, url: str, folder: str) -> StoredAsset:
    if deps.store.is_ours(url):
        key = url[len(deps.store.public_base) + 1:]
        return StoredAsset(key=key, url=url, content_type=mimetypes.guess_type(url)[0] or "", bytes=0)
    policy = FetchPolicy.from_settings(deps.settings, max_bytes=deps.settings.upload_max_bytes)
    return await copy_from_url(deps.store, url, folder=folder, policy=policy)


@router.post("/api/r2/store-remote-signed")
@router.post("/api/r2/store-remote")  # the client before 2025-12-13
async def store_remote_signed(request: Request, body: RemoteBody | None = None,
                              deps: GatewayDeps = Depends(get_deps), who: Identity = Depends(identity),
                              ) -> dict[str, object]:
    """Copy a remote URL into the store; the client prefers `publicUrl`."""
    request.state.failure_code = "STORE_REMOTE_FAILED"
    body = body or RemoteBody()
    url = first(body.sourceUrl, body.url)
    if not url:
        raise InvalidInputError("sourceUrl (or url) is required.", code="MISSING_URL")
    asset = await _copy(deps, url, folder_of(body.kind, body.folder))
    return {"ok": True, "key": asset.key, "publicUrl": asset.url, "url": asset.url,
            "requestId": request_id(request), "passId": who.pass_id}


@router.post("/store-remote-generation")
async def store_remote_generation(request: Request, body: RemoteBody | None = None,
                                  deps: GatewayDeps = Depends(get_deps), who: Identity = Depends(identity),
                                  ) -> dict[str, object]:
    request.state.failure_code = "STORE_REMOTE_FAILED"
    body = body or RemoteBody()
    url = first(body.url, body.sourceUrl, body.imageUrl, body.videoUrl)
    if not url:
        raise InvalidInputError("url is required.", code="NO_URL")
    asset = await _copy(deps, url, folder_of(body.kind, body.folder or "generations"))
    return {"ok": True, "key": asset.key, "publicUrl": asset.url, "url": asset.url,
            "requestId": request_id(request), "passId": who.pass_id}


class DataUrlBody(PassFields):
    dataUrl: str | None = None
    kind: str | None = None
    folder: str | None = None
    filename: str | None = None


@router.post("/api/r2/upload-dataurl")
@router.post("/api/r2/upload")  # the client before 2025-12-13: `{dataUrl, kind, passId}`
async def upload_dataurl(request: Request, body: DataUrlBody | None = None, deps: GatewayDeps = Depends(get_deps),
                         who: Identity = Depends(identity)) -> dict[str, object]:
    request.state.failure_code = "UPLOAD_FAILED"
    body = body or DataUrlBody()
    if not body.dataUrl:
        raise InvalidInputError("dataUrl is required.", code="MISSING_DATAURL")
    asset = await store_data_url(deps, body.dataUrl, folder_of(body.kind, body.folder), body.filename)
    return stored(asset, requestId=request_id(request), passId=who.pass_id)


@router.post("/api/upload")
async def upload_image(request: Request, file: UploadFile = File(...), kind: str | None = None,
                       deps: GatewayDeps = Depends(get_deps), who: Identity = Depends(identity)) -> dict[str, object]:
    """A multipart image (`file`): type sniffed from bytes, size-limited, decoded with Pillow."""
    request.state.failure_code = "UPLOAD_FAILED"
    limit = deps.settings.upload_max_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise TooLargeError(f"The image is larger than {limit} bytes.")
    media = await inspect_media(data)  # decoded once, in a worker thread
    if media.content_type not in IMAGE_TYPES:
        raise InvalidInputError("Only images can be uploaded here.", code="INVALID_IMAGE")
    asset = await deps.store.put_bytes(data, folder=folder_of(kind, None), content_type=media.content_type,
                                       filename=file.filename)
    return stored(asset, width=media.width, height=media.height, requestId=request_id(request), passId=who.pass_id)


@router.get("/assets/{key:path}", response_class=FileResponse)
async def asset(key: str, deps: GatewayDeps = Depends(get_deps)) -> FileResponse:
    """The local store's files, with the type their name says (immutable: keys are never reused)."""
    store = deps.store
    if not isinstance(store, LocalAssetStore):
        raise NotFoundError("Assets are served by the bucket.", code="NOT_FOUND")
    try:
        path = store.path_of(key)
    except InvalidInputError as exc:
        raise NotFoundError("Asset not found.", code="NOT_FOUND") from exc
    if not path.is_file():
        raise NotFoundError("Asset not found.", code="NOT_FOUND")
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=31536000, immutable",
                                                          "X-Content-Type-Options": "nosniff"})



# A download answers any page (the frontend's fallback fetches it with no credentials); the bytes
# are never rendered on our origin: an attachment, not sniffed, sandboxed.
DOWNLOAD_HEADERS = {"Access-Control-Allow-Origin": "*", "X-Content-Type-Options": "nosniff",
                    "Content-Security-Policy": "sandbox"}


def download_refused(status: int, error: str, code: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error, "code": code}, status_code=status, headers=DOWNLOAD_HEADERS)


async def _fetched(deps: GatewayDeps, url: str) -> tuple[bytes, str] | JSONResponse:
    """Another host's file, through the fetch guard: its HTTP error mirrored, a host inside our
    network refused (400), a host that does not answer 502 (UPSTREAM.md 2.4, without the open proxy)."""
    try:
        return await fetch(url, FetchPolicy.from_settings(deps.settings))
    except InvalidInputError as exc:
        upstream = exc.details.get("upstream_status")
        if isinstance(upstream, int):
            return download_refused(upstream, f"Upstream {upstream}", "UPSTREAM_ERROR")
        if exc.instance_code in ("URL_NOT_ALLOWED", "INVALID_URL"):
            return download_refused(400, f"URL not allowed: {exc.message}", exc.instance_code)
        if exc.instance_code == "FILE_TOO_LARGE":
            return download_refused(413, "File too large", "FILE_TOO_LARGE")
        return download_refused(502, "Failed to fetch upstream", exc.instance_code)
    except ServiceUnavailableError:
        return download_refused(502, "Failed to fetch upstream", "FETCH_FAILED")


@router.get("/public/download", responses={400: {"description": "Missing url param / URL not allowed"},
                                           502: {"description": "Failed to fetch upstream"}})
async def public_download(url: str | None = None, deps: GatewayDeps = Depends(get_deps)) -> Response:
    """A file as an attachment: ours read from the store, any other public URL fetched through the guard."""
    if not url:
        return download_refused(400, "Missing url param", "MISSING_URL")
    if deps.store.is_ours(url):
        try:
            data = await deps.store.get_bytes(url)
        except InvalidInputError:
            return download_refused(404, "Upstream 404", "NOT_FOUND")
        content_type = mimetypes.guess_type(url.split("?", 1)[0])[0] or "application/octet-stream"
    else:
        fetched = await _fetched(deps, url)
        if isinstance(fetched, JSONResponse):
            return fetched
        data, content_type = fetched
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    safe_name = "".join(c for c in name if c.isalnum() or c in "._-")[:120] or "download"
    return Response(data, media_type=content_type or "application/octet-stream",
                    headers={**DOWNLOAD_HEADERS, "Content-Disposition": f'attachment; filename="{safe_name}"'})
