"""Content-addressed blobs: parameters and dataset shares, stored under their SHA-256 digest.

Writers never overwrite (SET NX: the same digest means the same bytes) and every read verifies
the digest, so a corrupted or substituted blob is caught before anyone deserialises it. Only the
scripts delete blobs, once no live round names them (lua/lib/retire.lua).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict

import redis

from hierfl import keys
from hierfl.errors import BadInput, BlobGone, IntegrityError

#: With `put(..., unless_stored=True)`, blobs at least this large are sent only if no copy is
#: stored yet: one EXISTS costs less than sending them again.
CHECK_BEFORE_UPLOAD = 64 * 1024
#: Default bound of a process's `BlobCache`, and the variable that changes it.
CACHE_MB = 256
CACHE_ENV = "HIERFL_BLOB_CACHE_MB"


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobCache:
    """Verified blobs shared by the nodes of one process (`hierfl simulate`, `hierfl node
    --count N`), so that each is downloaded once rather than once per node.

    A blob never changes under its digest, so a copy that was verified (or that this process
    stored itself) is as good as the server's for as long as anyone reads it. The cache does
    not say whether the server still has the blob: a node that reads a retired blob from it is
    in a round that is over, and its next script call is refused as stale. Least recently used
    blobs go first once the total passes `max_bytes`; a blob over a quarter of it is not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._blobs: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> BlobCache:
        """Bounded by $HIERFL_BLOB_CACHE_MB (default CACHE_MB; 0 keeps nothing)."""
        text = os.environ.get(CACHE_ENV, "").strip() or str(CACHE_MB)
        try:
            mb = float(text)
        except ValueError:
            mb = -1.0
        if not 0 <= mb < math.inf:
            raise BadInput(f"${CACHE_ENV} must be a number of megabytes >= 0, got {text!r}")
        return cls(int(mb * 1_000_000))

    def get(self, root: str, digest: str) -> bytes | None:
        with self._lock:
            data = self._blobs.get((root, digest))
            if data is not None:
                self._blobs.move_to_end((root, digest))
            return data

    def add(self, root: str, digest: str, data: bytes) -> None:
        """Keep `data`, which the caller verified hashes to `digest`."""
        if len(data) > self.max_bytes // 4:
            return
        with self._lock:
            if (root, digest) in self._blobs:
                return
            self._blobs[(root, digest)] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, dropped = self._blobs.popitem(last=False)
                self._bytes -= len(dropped)


class BlobStore:
    """One job's blobs. With a `cache` (shared by the nodes of a process), a blob read or
    stored once is not downloaded again."""

    def __init__(self, client: redis.Redis, root: str, cache: BlobCache | None = None) -> None:
        self.client = client
        self.root = root
        self.cache = cache

    def put(self, data: bytes, unless_stored: bool = False) -> str:
        """Store `data`; its digest. `unless_stored`: not sent when a copy is stored already (a
        worker's aggregate that a peer uploaded first): when this process's cache holds it (a
        peer in this process stored it, or it was downloaded), or, for a large blob, when the
        server says so. The scripts may retire that copy before the call that names it, which
        is then refused with MISSING_BLOB: the caller puts it again (plainly) and repeats the
        call."""
        digest = digest_of(data)
        if unless_stored and self._cached(digest):
            return digest  # this process stored or downloaded it: not even asked again
        key = keys.blob(self.root, digest)
        if not (unless_stored and len(data) >= CHECK_BEFORE_UPLOAD and self.client.exists(key)):
            self.client.set(key, data, nx=True)
        if self.cache is not None:
            self.cache.add(self.root, digest, data)
        return digest

    def _cached(self, digest: str) -> bool:
        return self.cache is not None and self.cache.get(self.root, digest) is not None

    def size(self, digest: str) -> int:
        """Bytes stored under `digest` (0 when none), without downloading them."""
        if self.cache is not None and (data := self.cache.get(self.root, digest)) is not None:
            return len(data)
        return int(self.client.strlen(keys.blob(self.root, digest)))

    def get(self, digest: str) -> bytes:
        if self.cache is not None and (data := self.cache.get(self.root, digest)) is not None:
            return data
        data = self.client.get(keys.blob(self.root, digest))
        if data is None:
            raise BlobGone(f"job {self.root}: blob {digest} is not stored")
        actual = digest_of(data)
        if actual != digest:
            raise IntegrityError(
                f"job {self.root}: blob {digest} does not match its digest (got {actual})"
            )
        if self.cache is not None:
            self.cache.add(self.root, digest, data)
        return data
