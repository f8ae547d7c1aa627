"""A blocking client: the thin adapter that runs a ``ClientSession`` over a transport.

All protocol decisions (sequence numbers, window, retransmission, BUSY backoff)
are the session's; this module only owns the clock and the reads and writes.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from protocol.errors import ErrorCode
from protocol.link import PeerGone, SerialLink, Transport
from protocol.messages import (
    AccountEntry,
    AccountPage,
    Error,
    Hello,
    Identify,
    Message,
    ReadAccounts,
)
from protocol.session import ClientSession, GaveUp, Reply, Undecodable

M = TypeVar("M", bound=Message)


class MeterError(Exception):
    """The meter refused a request with ERROR.  Carries the numbered code."""

    def __init__(self, error: Error, request: Message) -> None:
        try:
            code_name = ErrorCode(error.code).name
        except ValueError:
            code_name = str(error.code)
        index = f" (record {error.index})" if error.index != 0xFFFF else ""
        super().__init__(f"{type(request).__name__} refused: {code_name}{index}: {error.message}")
        self.code = error.code
        self.index = error.index
        self.error = error
        self.request = request


class MeterClient:
    """Talks to one meter.  ``call`` for one request, ``pipeline`` to keep a window full."""

    def __init__(
        self,
        transport: Transport,
        session: ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
        idle_gap: float = 0.05,
        client_name: str = "meterlink",
    ) -> None:
        self.transport = transport
        self.session = session or ClientSession()
        self.clock = clock
        self.idle_gap = idle_gap
        self.client_name = client_name
        self.identity: Identify | None = None
        self._last_rx = clock()

    @classmethod
    def connect(
        cls, url: str, baudrate: int = 115200, open_timeout: float = 5.0, **kw: object
    ) -> MeterClient:
        link = SerialLink.open(url, baudrate=baudrate, open_timeout=open_timeout)
        try:
            client = cls(link, **kw)  # type: ignore[arg-type]
            if not client.session.char_time:
                # retransmission timers allow for frames crossing a line this slow
                client.session.char_time = 10 / baudrate
            client.hello()
        except BaseException:
            link.close()
            raise
        return client

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> MeterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def bytes_sent(self) -> int:
        return self.session.bytes_sent

    def hello(self) -> Identify:
        """Start a fresh session; learn who the meter is and its window."""
        self.session.forget()
        reply = self.call(Hello(secrets.randbits(32), 1, self.client_name), expect=Identify)
        self.identity = reply
        self.session.window = max(1, min(self.session.window, reply.window))
        return reply

    def call(self, msg: Message, expect: type[M] | None = None) -> M:
        """Send one request and wait for its reply; ERROR raises MeterError."""
        (reply,) = self.pipeline([msg])
        return self._check(msg, reply, expect)

    @staticmethod
    def _check(msg: Message, reply: Message, expect: type[M] | None) -> M:
        if isinstance(reply, Error):
            raise MeterError(reply, msg)
        if expect is not None and not isinstance(reply, expect):
            raise MeterError(
                Error(ErrorCode.MALFORMED, message=f"unexpected {type(reply).__name__}"), msg
            )
        return reply  # type: ignore[return-value]

    def pipeline(
        self,
        msgs: Iterable[Message],
        on_reply: Callable[[Message, Message], None] | None = None,
        stop_on_error: bool = True,
    ) -> list[Message]:
        """Send ``msgs`` in order with up to ``window`` in flight; replies in order.

        With ``stop_on_error`` the first ERROR reply stops sending further requests
        (those already in flight are still collected) and raises MeterError.
        """
        session = self.session
        queue: deque[Message] = deque(msgs)
        order: list[int] = []
        replies: dict[int, Message] = {}
        failed: tuple[Message, Error] | None = None
        while queue or session.in_flight:
            now = self.clock()
            burst = bytearray()
            while queue and session.can_send() and failed is None:
                seq, frame = session.send(queue.popleft(), now)
                order.append(seq)
                burst += frame
            if burst:
                self.transport.write(bytes(burst))
            if failed is not None:
                queue.clear()
            if not session.in_flight:
                break
            deadline = session.next_deadline() or now
            wait = max(0.0, deadline - now)
            if session.decoder.in_frame:
                wait = min(wait, self.idle_gap)
            data = self.transport.read(wait)
            now = self.clock()
            events = []
            if data:
                self._last_rx = now
                events += session.receive(data, now)
            elif session.decoder.in_frame and now - self._last_rx >= self.idle_gap:
                events += session.line_idle(now)
            resend, given_up = session.poll(now)
            if resend:
                self.transport.write(resend)
            events += given_up
            for event in events:
                if isinstance(event, Reply):
                    replies[event.seq] = event.reply
                    if on_reply is not None:
                        on_reply(event.request, event.reply)
                    if isinstance(event.reply, Error) and stop_on_error and failed is None:
                        failed = (event.request, event.reply)
                elif isinstance(event, GaveUp):
                    session.forget()
                    what = "stayed busy" if event.busy else "did not answer"
                    raise PeerGone(
                        f"meter {what} {type(event.request).__name__} after {event.attempts} tries"
                    )
                elif isinstance(event, Undecodable):
                    pass  # treated as lost: the request is retransmitted on its timer
        if failed is not None:
            raise MeterError(failed[1], failed[0])
        return [replies[seq] for seq in order]

    def call_all(self, msgs: Sequence[Message], expect: type[M]) -> list[M]:
        """``pipeline`` and check every reply is ``expect``."""
        return [self._check(m, r, expect) for m, r in zip(msgs, self.pipeline(msgs), strict=True)]


READ_ATTEMPTS = 3


def _malformed(request: Message, why: str) -> MeterError:
    return MeterError(Error(ErrorCode.MALFORMED, message=why), request)


def read_all_accounts(client: MeterClient) -> list[AccountEntry]:
    """Every account on the meter, in meter order (parents before children).

    The first page tells ``total`` and how many entries fit in a page; the rest
    are asked for in one pipeline.  A page that comes back shorter (longer names)
    leaves gaps that are filled by further rounds.  If ``total`` changes between
    pages the read starts again (up to :data:`READ_ATTEMPTS` times).
    """
    for _ in range(READ_ATTEMPTS):
        first_req = ReadAccounts(0, 0xFFFF)
        first = client.call(first_req, expect=AccountPage)
        total = first.total
        got: dict[int, AccountEntry] = dict(enumerate(first.entries))
        if total and not first.entries:
            raise _malformed(first_req, "empty account page before the end of the list")
        chunk = max(1, len(first.entries))
        changed = False
        while len(got) < total and not changed:
            missing = [i for i in range(total) if i not in got]
            reqs: list[ReadAccounts] = []
            for i in missing:
                if reqs and i < reqs[-1].offset + reqs[-1].limit:
                    continue
                reqs.append(ReadAccounts(i, min(chunk, total - i)))
            pages = client.call_all(reqs, AccountPage)
            progress = False
            for req, page in zip(reqs, pages, strict=True):
                if page.total != total:
                    changed = True
                    break
                if page.offset != req.offset:
                    raise _malformed(req, f"page for offset {req.offset} came at {page.offset}")
                for k, entry in enumerate(page.entries[: req.limit]):
                    if req.offset + k not in got:
                        got[req.offset + k] = entry
                        progress = True
            if not progress and not changed:
                raise _malformed(reqs[0], "the meter returned no accounts for a missing offset")
        if not changed:
            return [got[i] for i in range(total)]
    raise _malformed(ReadAccounts(0, 0xFFFF), "the account list kept changing while being read")
