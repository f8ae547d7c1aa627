from __future__ import annotations

import os
import threading

import pytest

from protocol.client import MeterClient
from protocol.link import LinkError, PeerGone, PtyMaster, SerialLink, TcpListener
from protocol.messages import Identify
from protocol.session import ServerSession


def _read_exactly(
    link: SerialLink | PtyMaster | TcpListener, n: int, timeout: float = 2.0
) -> bytes:
    out = b""
    for _ in range(int(timeout / 0.05)):
        out += link.read(0.05)
        if len(out) >= n:
            break
    return out


def test_serial_link_over_a_real_pty_pair() -> None:
    master = PtyMaster()
    try:
        link = SerialLink.open(master.slave_path)
        try:
            link.write(b"\x00\xa5\x4d\xff" * 100)
            assert _read_exactly(master, 400) == b"\x00\xa5\x4d\xff" * 100
            master.write(bytes(range(256)))
            assert _read_exactly(link, 256) == bytes(range(256))  # raw: no line discipline
        finally:
            link.close()
    finally:
        master.close()


def test_pty_is_exclusive() -> None:
    master = PtyMaster()
    try:
        link = SerialLink.open(master.slave_path)
        try:
            with pytest.raises(LinkError, match=master.slave_path):
                SerialLink.open(master.slave_path, open_timeout=0.2)
        finally:
            link.close()
    finally:
        master.close()


def test_socket_url_to_a_local_listener() -> None:
    listener = TcpListener("127.0.0.1", 0)
    try:
        link = SerialLink.open(listener.url)
        try:
            link.write(b"hello")
            assert _read_exactly(listener, 5) == b"hello"
            listener.write(b"world")
            assert _read_exactly(link, 5) == b"world"
        finally:
            link.close()
    finally:
        listener.close()


def test_loop_url() -> None:
    link = SerialLink.open("loop://")
    try:
        link.write(b"abc")
        assert _read_exactly(link, 3) == b"abc"
    finally:
        link.close()


def test_missing_port_is_a_clear_error() -> None:
    with pytest.raises(LinkError, match="/dev/does-not-exist"):
        SerialLink.open("/dev/does-not-exist", open_timeout=0.1)


def test_peer_gone_when_the_socket_closes() -> None:
    listener = TcpListener("127.0.0.1", 0)
    link = SerialLink.open(listener.url)
    try:
        _read_exactly(listener, 1, timeout=0.2)  # accept
        listener.close()
        with pytest.raises(PeerGone):
            for _ in range(50):
                link.read(0.05)
    finally:
        link.close()
        listener.close()


def test_hello_exchange_over_a_pty() -> None:
    """A minimal meter (session only) answers HELLO over a real pty."""
    master = PtyMaster()
    stop = threading.Event()
    identity = Identify(1, "DM800i", "SIM-1", "test", 25, 0, 0, bytes(16), 1024, 8)

    def meter() -> None:
        session = ServerSession()
        while not stop.is_set():
            out = session.receive(master.read(0.05))
            while (req := session.next_request()) is not None:
                out += session.respond(req, identity)
            if out:
                master.write(out)

    t = threading.Thread(target=meter)
    t.start()
    try:
        with MeterClient.connect(master.slave_path) as client:
            assert client.identity == identity
            assert os.path.exists(master.slave_path)
    finally:
        stop.set()
        t.join()
        master.close()


def test_pty_write_with_nobody_reading_drops_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import protocol.link as link

    monkeypatch.setattr(link, "WRITE_STALL_LIMIT", 0.2)
    master = PtyMaster()
    try:
        master.write(b"\x55" * 1_000_000)  # far beyond any pty buffer; nobody reads
        assert 0 < master.dropped < 1_000_000
    finally:
        master.close()
