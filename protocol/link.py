"""Transports: the only module that touches ports.  No protocol logic lives here.

Every transport offers the same three calls::

    write(data)            write all of ``data``
    read(timeout) -> bytes what arrived within ``timeout`` seconds (b"" if nothing);
                           raises PeerGone when the other end has disappeared
    close()

* ``SerialLink`` (the agent's side, and a meter on a real serial device) opens any
  pyserial ``serial_for_url`` target: a device path such as a pty slave
  (``/dev/pts/7``), ``socket://host:port``, ``loop://``, ``rfc2217://host:port``.
  It is exclusive where the platform allows (a TIOCEXCL/flock on POSIX serial
  devices), retries the open with backoff while the port is not there yet, and
  turns pyserial's errors into ``LinkError``/``PeerGone`` with the URL in the text.
* ``PtyMaster`` is the virtual meter's end of a pseudo-terminal pair: the meter
  holds the master, clients open the slave path with ``SerialLink``.
* ``TcpListener`` is the virtual meter's end of ``--tcp HOST:PORT``: it accepts
  one client at a time, which connects with ``socket://HOST:PORT``.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
import tty
from typing import Protocol

import serial


class LinkError(OSError):
    """A port could not be opened or used."""


class PeerGone(LinkError):
    """The other end disappeared (cable pulled, process died, socket closed)."""


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def read(self, timeout: float) -> bytes: ...

    def close(self) -> None: ...


class SerialLink:
    """A pyserial port opened with ``serial_for_url``."""

    def __init__(self, port: serial.SerialBase, url: str) -> None:
        self._port = port
        self.url = url
        self._timeout: float | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    @classmethod
    def open(
        cls,
        url: str,
        baudrate: int = 115200,
        open_timeout: float = 5.0,
        exclusive: bool = True,
        write_timeout: float = 10.0,
    ) -> SerialLink:
        """Open ``url``, retrying with backoff for up to ``open_timeout`` seconds."""
        deadline = time.monotonic() + open_timeout
        delay = 0.02
        while True:
            try:
                port = serial.serial_for_url(
                    url, do_not_open=True, baudrate=baudrate, timeout=0, write_timeout=write_timeout
                )
                if exclusive and isinstance(port, serial.Serial):
                    port.exclusive = True
                port.open()
                return cls(port, url)
            except (serial.SerialException, OSError, ValueError) as exc:
                if time.monotonic() + delay > deadline:
                    raise LinkError(f"cannot open {url}: {exc}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise PeerGone(f"{self.url}: write failed: {exc}") from None
        self.bytes_out += len(data)

    def read(self, timeout: float) -> bytes:
        port = self._port
        try:
            if self._timeout != timeout:
                port.timeout = timeout
                self._timeout = timeout
            data = port.read(1)
            if data:
                waiting = port.in_waiting  # type: ignore[attr-defined]
                if waiting:
                    data += port.read(waiting)
        except (serial.SerialException, OSError) as exc:
            raise PeerGone(f"{self.url}: peer gone: {exc}") from None
        self.bytes_in += len(data)
        return bytes(data)

    def close(self) -> None:
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass


def _wait_readable(fd: int, timeout: float) -> bool:
    ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
    return bool(ready)


WRITE_STALL_LIMIT = 2.0
"""Seconds a pty write may wait for a reader before the rest is dropped."""


def _write_all(fd: int, data: bytes, stall_limit: float | None = None) -> int:
    """Write ``data``; return how many bytes were dropped because nobody read them.

    A serial line with no one listening loses what is sent: if the pty's buffer
    stays full for ``stall_limit`` seconds the rest is dropped instead of blocking
    the meter (and its stop signal) forever.
    """
    limit = WRITE_STALL_LIMIT if stall_limit is None else stall_limit
    view = memoryview(data)
    deadline = time.monotonic() + limit
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return len(view)
            select.select([], [fd], [], min(remaining, 0.1))
            continue
        view = view[n:]
        deadline = time.monotonic() + limit
    return 0


class PtyMaster:
    """The meter's end of a fresh pty pair; clients open ``slave_path``.

    The meter also keeps the slave open (in raw mode) so that the pair survives
    clients coming and going, and so that no line discipline touches the bytes
    before the first client sets the port up.
    """

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.slave_path = os.ttyname(self._slave)
        self.dropped = 0  # bytes lost because no client drained the pty

    def fileno(self) -> int:
        return self.master

    def write(self, data: bytes) -> None:
        self.dropped += _write_all(self.master, data)

    def read(self, timeout: float) -> bytes:
        if not _wait_readable(self.master, timeout):
            return b""
        try:
            return os.read(self.master, 65536)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # no client has the slave open
                time.sleep(min(timeout, 0.05))
                return b""
            raise PeerGone(f"pty {self.slave_path}: {exc}") from None

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class TcpListener:
    """The meter's end of a TCP port; one client at a time."""

    def __init__(self, host: str, port: int) -> None:
        self._server = socket.create_server((host, port), reuse_port=False)
        self._server.setblocking(False)
        self.address = self._server.getsockname()[:2]
        self._conn: socket.socket | None = None

    @property
    def url(self) -> str:
        host, port = self.address
        return f"socket://{host}:{port}"

    def write(self, data: bytes) -> None:
        if self._conn is None:
            return  # nobody to talk to: the reply is lost, as on an unplugged line
        try:
            self._conn.sendall(data)
        except OSError:
            self._drop()

    def read(self, timeout: float) -> bytes:
        fd = self._conn if self._conn is not None else self._server
        ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        if not ready:
            return b""
        if self._conn is None:
            try:
                conn, _ = self._server.accept()
            except BlockingIOError:
                return b""
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
            return b""
        try:
            data = self._conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop()
        return data

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._drop()
        self._server.close()
