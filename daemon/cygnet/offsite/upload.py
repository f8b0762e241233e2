"""Uploading one local file as one encrypted object: multipart, parallel, checked.

Each part carries its Content-MD5, which the store checks on receipt, and the
ETag the store answers must equal it; a multipart object's final ETag must
equal the MD5 of its parts' MD5s. So an object is only ever counted as
off-host when the store holds exactly the bytes that were sent, and the
AES-GCM tags check them again at every fetch. A failed object is aborted (its
parts discarded) and retried from scratch by the caller: an upload id does
not survive every store's restart.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass
from typing import Any

from cygnet.offsite.crypto import CHUNK, Encryptor, Keyring
from cygnet.offsite.store import ObjectStore, OffsiteRefused, OffsiteUnreachable


class ChecksumMismatch(OffsiteUnreachable):
    """The store answered a different checksum than the bytes sent: retried."""


@dataclass(frozen=True)
class Uploaded:
    key: str
    plain_bytes: int
    stored_bytes: int


def put_file(store: ObjectStore, keyring: Keyring, path: str, key: str, parts: Executor,
             lock: bool = False) -> Uploaded:
    """Uploads path as key; FileNotFoundError if the file is gone (pruned meanwhile)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        size = st.st_size
        box = Encryptor(keyring, key, size)
        # The mtime comes back with a fetched copy: archived WAL's says when it was
        # written, which is what bounds a point-in-time target (fetch.py).
        meta = {"Metadata": {"cygnet-key-id": box.key_id, "cygnet-size": str(size),
                             "cygnet-mtime": f"{st.st_mtime:.6f}"},
                **store.lock_args(lock)}
        per_part = store.config.part_chunks
        if box.chunks <= per_part:
            body = _part(f.fileno(), box, 0, box.chunks)
            _put(store, key, body, meta)
            return Uploaded(key, size, len(body))
        return _multipart(store, key, f.fileno(), box, meta, parts, size)


def _part(fd: int, box: Encryptor, first: int, end: int) -> bytes:
    """Ciphertext of chunks [first, end); the first part starts with the header."""
    out = [box.header] if first == 0 else []
    for k in range(first, end):
        plain = os.pread(fd, CHUNK, k * CHUNK)
        if len(plain) != CHUNK and k != box.chunks - 1:
            raise OffsiteRefused("backup_dir", "a repository object shrank while it was "
                                 "uploaded (repository objects are immutable)")
        out.append(box.chunk(k, plain))
    return b"".join(out)


def _md5(body: bytes) -> tuple[str, bytes]:
    digest = hashlib.md5(body, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode(), digest


def _put(store: ObjectStore, key: str, body: bytes, meta: dict[str, Any]) -> None:
    b64, digest = _md5(body)
    answer = store.call(f"upload of {key}", store.client.put_object, Key=key, Body=body,
                        ContentMD5=b64, **meta)
    _check_etag(key, answer, digest.hex())


def _check_etag(key: str, answer: dict[str, Any], expected: str) -> None:
    if answer.get("ServerSideEncryption") == "aws:kms" or answer.get("SSECustomerAlgorithm"):
        return  # their ETags are not MD5s; the store still checked Content-MD5
    etag = str(answer.get("ETag", ""))
    if etag.strip('"') != expected:
        raise ChecksumMismatch(f"offsite_endpoint: {key}: the store answered checksum "
                               f"{etag.strip(chr(34))}, {expected} was sent")


def _multipart(store: ObjectStore, key: str, fd: int, box: Encryptor, meta: dict[str, Any],
               parts: Executor, size: int) -> Uploaded:
    started = store.call(f"upload of {key}", store.client.create_multipart_upload,
                         Key=key, **meta)
    upload_id = started["UploadId"]
    per_part = store.config.part_chunks
    ranges = [(n + 1, k, min(k + per_part, box.chunks)) for n, k in
              enumerate(range(0, box.chunks, per_part))]
    futures: list[Future[tuple[int, bytes, int]]] = []
    try:
        futures = [parts.submit(_send_part, store, key, upload_id, fd, box, *r) for r in ranges]
        done = [f.result() for f in futures]
        whole = hashlib.md5(b"".join(d for _, d, _ in done), usedforsecurity=False).hexdigest()
        answer = store.call(
            f"upload of {key}", store.client.complete_multipart_upload, Key=key,
            UploadId=upload_id, MultipartUpload={"Parts": [
                {"PartNumber": n, "ETag": '"' + d.hex() + '"'} for n, d, _ in done]})
        _check_etag(key, answer, f"{whole}-{len(done)}")
    except BaseException:
        for f in futures:
            f.cancel()
        wait(futures)  # no part may land after the abort
        _abort(store, key, upload_id)
        raise
    return Uploaded(key, size, sum(n for _, _, n in done))


def _send_part(store: ObjectStore, key: str, upload_id: str, fd: int, box: Encryptor,
               number: int, first: int, end: int) -> tuple[int, bytes, int]:
    body = _part(fd, box, first, end)
    b64, digest = _md5(body)
    answer = store.call(f"upload of {key} (part {number})", store.client.upload_part, Key=key,
                        UploadId=upload_id, PartNumber=number, Body=body, ContentMD5=b64)
    _check_etag(f"{key} part {number}", answer, digest.hex())
    return number, digest, len(body)


def _abort(store: ObjectStore, key: str, upload_id: str) -> None:
    # The store may be away: a lifecycle rule (or a later abort) cleans up.
    with contextlib.suppress(OffsiteRefused, OffsiteUnreachable):
        store.call(f"abort of {key}", store.client.abort_multipart_upload, Key=key,
                   UploadId=upload_id)
