"""Content-addressed blobs: the process-wide cache of verified blobs, and uploads skipped when
a copy is stored already."""

from __future__ import annotations

import numpy as np
import pytest
from driver import Driver

from hierfl import keys
from hierfl.errors import BadInput, BlobGone, IntegrityError
from hierfl.learning import params as P
from hierfl.node.runtime import Slot
from hierfl.node.worker import WorkerNode
from hierfl.protocol import Role
from hierfl.store.blobs import CACHE_ENV, CHECK_BEFORE_UPLOAD, BlobCache, BlobStore, digest_of


def calls(r, command: str) -> int:
    return int(r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_blob_read_through_the_shared_cache_is_downloaded_once(r):
    cache = BlobCache(1_000_000)
    first, second = BlobStore(r, "bl", cache), BlobStore(r, "bl", cache)
    digest = BlobStore(r, "bl").put(b"global model")
    assert first.get(digest) == b"global model"
    gets = calls(r, "get")
    assert second.get(digest) == b"global model" and second.size(digest) == 12
    assert calls(r, "get") == gets
    # Another job's store does not see it: blobs are retired per job.
    with pytest.raises(BlobGone):
        BlobStore(r, "other", cache).get(digest)


def test_the_cache_keeps_only_verified_bytes(r):
    cache = BlobCache(1_000_000)
    store = BlobStore(r, "bl", cache)
    fake = digest_of(b"honest")
    r.set(keys.blob("bl", fake), b"substituted")
    for _ in range(2):  # refused each time, never served from the cache
        with pytest.raises(IntegrityError, match="does not match its digest"):
            store.get(fake)
    assert cache.get("bl", fake) is None


def test_the_cache_drops_the_least_recently_used_blob_past_its_bound():
    cache = BlobCache(100)
    for name in ("a", "b", "c"):
        cache.add("j", name, name.encode() * 25)
    assert cache.get("j", "a") is not None  # now more recent than b and c
    cache.add("j", "d", b"d" * 25)  # 100 bytes: all kept
    cache.add("j", "e", b"e" * 25)  # 125: the least recently used goes
    assert [n for n in "abcde" if cache.get("j", n)] == ["a", "c", "d", "e"]
    cache.add("j", "big", b"x" * 26)  # over a quarter of the bound: not kept
    assert cache.get("j", "big") is None


def test_the_cache_bound_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "1.5")
    assert BlobCache.from_env().max_bytes == 1_500_000
    for bad in ("lots", "inf", "-1", "nan"):
        monkeypatch.setenv(CACHE_ENV, bad)
        with pytest.raises(BadInput, match=r"HIERFL_BLOB_CACHE_MB must be a number of megab"):
            BlobCache.from_env()


def test_a_large_blob_already_stored_is_not_sent_again(r):
    store = BlobStore(r, "bl")
    data = b"\x01" * CHECK_BEFORE_UPLOAD
    digest = store.put(data)
    sets = calls(r, "set")
    assert store.put(data, unless_stored=True) == digest
    assert calls(r, "set") == sets
    store.put(b"small", unless_stored=True)  # a small one is simply sent (SET NX)
    assert calls(r, "set") == sets + 1


def test_a_blob_this_process_holds_is_not_even_asked_about(r):
    cache = BlobCache(1_000_000)
    data = b"\x02" * CHECK_BEFORE_UPLOAD
    digest = BlobStore(r, "bl", cache).put(data)  # a peer in this process stored it
    exists, sets = calls(r, "exists"), calls(r, "set")
    assert BlobStore(r, "bl", cache).put(data, unless_stored=True) == digest
    assert (calls(r, "exists"), calls(r, "set")) == (exists, sets)
    BlobStore(r, "bl", cache).put(data)  # a plain put always sends (SET NX)
    assert calls(r, "set") == sets + 1


class RetiredMeanwhile(WorkerNode):
    """Plays the race `unless_stored` leaves open: the stored copy that let this worker skip
    its upload is retired before its upload_aggregate call."""

    def publish(self, params: P.Params, state) -> str:
        digest = super().publish(params, state)
        self.client.delete(keys.blob(self.slot.root, digest))
        return digest


def test_a_worker_uploads_its_aggregate_again_when_the_stored_copy_was_retired(r, caplog):
    d = Driver(r, "bl", sub=[])
    d.setup()
    d.train_cluster("bl")
    state = d.cluster("bl")
    worker = RetiredMeanwhile(r, Slot("bl", Role.WORKER, "w0"))
    d.scripts.start_aggregation("bl", "worker", "w0", state.generation)
    result = {"w": np.arange(CHECK_BEFORE_UPLOAD // 4, dtype=np.float32)}
    data = P.to_bytes(result)
    BlobStore(r, "bl").put(data)  # a peer stored the same aggregate first

    with caplog.at_level("INFO"):
        digest = worker._upload(result, state)

    assert "was retired; uploading it" in caplog.text
    assert digest == digest_of(data) and r.get(keys.blob("bl", digest)) == data
    assert r.hget(keys.aggregates("bl"), "w0").decode() == digest
