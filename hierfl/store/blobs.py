"""Content-addressed blobs: parameters and dataset shares, stored under their SHA-256 digest.

Writers never overwrite (SET NX: the same digest means the same bytes) and every read verifies
the digest, so a corrupted or substituted blob is caught before anyone deserialises it. Only the
scripts delete blobs, once no live round names them (lua/lib/retire.lua).
"""

from __future__ import annotations

import hashlib

import redis

from hierfl import keys
from hierfl.errors import BlobGone, IntegrityError


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, client: redis.Redis, root: str) -> None:
        self.client = client
        self.root = root

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        self.client.set(keys.blob(self.root, digest), data, nx=True)
        return digest

    def size(self, digest: str) -> int:
        """Bytes stored under `digest` (0 when none), without downloading them."""
        return int(self.client.strlen(keys.blob(self.root, digest)))

    def get(self, digest: str) -> bytes:
        data = self.client.get(keys.blob(self.root, digest))
        if data is None:
            raise BlobGone(f"job {self.root}: blob {digest} is not stored")
        actual = digest_of(data)
        if actual != digest:
            raise IntegrityError(
                f"job {self.root}: blob {digest} does not match its digest (got {actual})"
            )
        return data
