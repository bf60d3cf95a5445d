"""The wire format between the router (control plane) and a replica, over a unix socket.

Every message is a frame: a 9-byte header ``!BII`` (kind, request id, payload length) and the
payload. The router sends ``PREDICT`` (payload: the client's request body, untouched) and
``PING``; the replica answers ``REPLY`` (payload: 2-byte HTTP status + response body),
``PONG``, and once per connection ``READY`` (payload: JSON ``{"framework", "pid"}``) or
``FAILED`` (payload: the loader's message, UTF-8) as soon as its model is loaded or not.

Request ids are chosen by the router and only need to be unique among its pending requests on
one connection. Frames are parsed incrementally by :class:`FrameReader`; there is no other
state, so the format costs one header per request and nothing else.
"""

from __future__ import annotations

import struct

PREDICT = 1
PING = 2
REPLY = 3
PONG = 4
READY = 5
FAILED = 6

HEADER = struct.Struct("!BII")
STATUS = struct.Struct("!H")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 1 << 31


def frame(kind: int, request_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, request_id, len(payload)) + payload


def reply_frame(request_id: int, status: int, body: bytes) -> bytes:
    return HEADER.pack(REPLY, request_id, len(body) + 2) + STATUS.pack(status) + body


class ProtocolError(Exception):
    pass


class FrameReader:
    """Feed bytes in, get complete ``(kind, request_id, payload)`` frames out."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, int, bytes]] = []
        offset = 0
        end = len(buffer)
        unpack = HEADER.unpack_from
        while end - offset >= HEADER_SIZE:
            kind, request_id, length = unpack(buffer, offset)
            if length > MAX_PAYLOAD or not 1 <= kind <= FAILED:
                raise ProtocolError(f"bad frame (kind {kind}, length {length})")
            stop = offset + HEADER_SIZE + length
            if stop > end:
                break
            frames.append((kind, request_id, bytes(buffer[offset + HEADER_SIZE:stop])))
            offset = stop
        if offset:
            del buffer[:offset]
        return frames


def peer_pid(sock: object) -> int | None:
    """The pid of the process at the other end of the unix socket ``sock`` (a socket, or a
    transport's ``get_extra_info("socket")``), from ``SO_PEERCRED``; None when unknown. Zygotes
    and replicas answer only the control plane's process: a confined replica can still connect
    to the named sockets of others on kernels before Landlock ABI 9."""
    import socket

    getsockopt = getattr(sock, "getsockopt", None)
    if getsockopt is None:
        return None
    try:
        pid, _uid, _gid = PEER_CREDENTIALS.unpack(getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             PEER_CREDENTIALS.size))
    except (OSError, struct.error, AttributeError):
        return None
    return int(pid)


PEER_CREDENTIALS = struct.Struct("3i")

#: Over TCP (the Ray backend) a replica first sends a random nonce of this size and answers
#: only a connection that sends back HMAC-SHA256(version secret, nonce): no frame before that.
NONCE_SIZE = 32


def answer(secret: bytes, nonce: bytes) -> bytes:
    import hashlib
    import hmac

    return hmac.new(secret, nonce, hashlib.sha256).digest()


def check_answer(secret: bytes, nonce: bytes, given: bytes) -> bool:
    import hmac

    return bool(secret) and hmac.compare_digest(answer(secret, nonce), given)
