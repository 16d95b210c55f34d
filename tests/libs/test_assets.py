"""The local asset store: public URLs, safe keys, signed PUT URLs."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from libs.assets import INLINE_WRITE_MAX, LocalAssetStore, safe_key
from libs.errors import InvalidInputError


@pytest.fixture
def store(tmp_path: Path) -> LocalAssetStore:
    return LocalAssetStore(tmp_path, "http://127.0.0.1:9/assets", "k3y", "http://127.0.0.1:9/api/r2/put")


@pytest.mark.parametrize("size", [16, INLINE_WRITE_MAX, INLINE_WRITE_MAX + 1],
                         ids=["small", "largest-inline", "threaded"])
async def test_put_then_get_round_trips_under_the_public_base(store: LocalAssetStore, size: int) -> None:
    data = (b"\x89PNG" + bytes(range(256)) * (size // 256 + 1))[:size]
    asset = await store.put_bytes(data, folder="outputs/still", content_type="image/png")
    assert asset.url.startswith("http://127.0.0.1:9/assets/outputs/still/") and asset.url.endswith(".png")
    assert asset.bytes == size
    assert await store.get_bytes(asset.url) == data
    assert await store.get_bytes(asset.key) == data
    assert not [p for p in store.root.rglob("*") if p.name.endswith(".tmp")]  # no temp file left behind


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "", "a\\b"])
def test_keys_cannot_escape_the_store(key: str) -> None:
    with pytest.raises(InvalidInputError):
        safe_key(key)


def test_presigned_put_verifies_only_its_own_key_type_and_time(store: LocalAssetStore) -> None:
    url = store.presign_put("uploads/a.png", "image/png", expires_s=60)
    query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
    expires, sig = int(query["expires"]), query["sig"]
    assert store.verify_put("uploads/a.png", "image/png", expires, sig)
    assert not store.verify_put("uploads/b.png", "image/png", expires, sig)
    assert not store.verify_put("uploads/a.png", "text/html", expires, sig)
    assert not store.verify_put("uploads/a.png", "image/png", expires + 1, sig)
    expired = store.presign_put("uploads/a.png", "image/png", expires_s=-1)
    q2 = {k: v[0] for k, v in parse_qs(urlparse(expired).query).items()}
    assert not store.verify_put("uploads/a.png", "image/png", int(q2["expires"]), q2["sig"])
    assert int(time.time()) < expires
