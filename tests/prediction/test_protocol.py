"""Router-replica frames survive arbitrary splitting; bad frames are refused."""

from __future__ import annotations

import pytest

from mlengine.prediction import protocol


def test_frames_reassemble_from_any_split() -> None:
    stream = b"".join([
        protocol.frame(protocol.PREDICT, 1, b'{"instances": [1]}'),
        protocol.reply_frame(7, 400, b'{"error": "x"}'),
        protocol.frame(protocol.PING, 0),
    ])
    for step in (1, 2, 5, 9, 100):
        reader = protocol.FrameReader()
        frames = []
        for i in range(0, len(stream), step):
            frames += reader.feed(stream[i:i + step])
        assert frames[0] == (protocol.PREDICT, 1, b'{"instances": [1]}')
        assert frames[1][:2] == (protocol.REPLY, 7)
        assert protocol.STATUS.unpack_from(frames[1][2])[0] == 400 and frames[1][2][2:] == b'{"error": "x"}'
        assert frames[2] == (protocol.PING, 0, b"")


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameReader().feed(b"\x63" + b"\x00" * 20)
