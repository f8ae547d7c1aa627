"""An in-memory, seeded, lossy line between a ClientSession and a ServerSession."""

from __future__ import annotations

import random
from collections.abc import Callable

from protocol.messages import Ack, Begin, Busy, Hello, Message
from protocol.session import ClientSession, GaveUp, Reply, ServerSession


class LossyLine:
    def __init__(
        self, seed: int, drop: float = 0.0, corrupt: float = 0.0, dup: float = 0.0
    ) -> None:
        self.rng = random.Random(seed)
        self.drop, self.corrupt, self.dup = drop, corrupt, dup

    def carry(self, data: bytes) -> bytes:
        if not data:
            return data
        r = self.rng.random()
        if r < self.drop:
            cut = self.rng.randrange(len(data))
            return data[:cut]  # the rest is lost
        data = bytearray(data)
        if self.rng.random() < self.corrupt:
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        if self.rng.random() < self.dup:
            data = data + data
        return bytes(data)


def run_exchange(
    requests: list[Message],
    line_up: LossyLine,
    line_down: LossyLine,
    window: int = 4,
    apply: Callable[[Message], Message] | None = None,
    busy_steps: int = 0,
    max_steps: int = 20000,
) -> tuple[list[Message], list[Message], ClientSession, ServerSession]:
    """Run ``requests`` through both sessions.  Returns (applied on the server in
    order, replies the client got in request order, client, server)."""
    client = ClientSession(window=window, rto=0.2, max_attempts=50)
    server = ServerSession(window=window)
    applied: list[Message] = []
    apply = apply or (lambda m: Ack(m.txn if isinstance(m, Begin) else 0))
    now = 0.0
    queue: list[Message] = [Hello(1), *requests]
    order: list[int] = []
    replies: dict[int, Message] = {}
    for _ in range(max_steps):
        if not queue and not client.in_flight:
            break
        up = bytearray()
        # like MeterClient: nothing is sent behind a HELLO until IDENTIFY is back
        while queue and client.can_send() and (not order or order[0] in replies):
            seq, frame = client.send(queue.pop(0), now)
            order.append(seq)
            up += frame
        resend, gave_up = client.poll(now)
        assert not [g for g in gave_up if isinstance(g, GaveUp)], gave_up
        up += resend
        busy = busy_steps > 0
        busy_steps -= 1
        down = bytearray(server.receive(line_up.carry(bytes(up)), busy=busy))
        down += server.line_idle()
        while (req := server.next_request()) is not None:
            reply = apply(req.message)
            if not isinstance(reply, Busy):
                applied.append(req.message)
            down += server.respond(req, reply, durable=True)
        events = client.receive(line_down.carry(bytes(down)), now)
        events += client.line_idle(now)
        for ev in events:
            if isinstance(ev, Reply):
                replies[ev.seq] = ev.reply
        deadline = client.next_deadline()
        now = max(
            now + 0.01, deadline if deadline is not None and not up and not down else now + 0.01
        )
    else:
        raise AssertionError("exchange did not finish")
    return applied[1:], [replies[s] for s in order[1:]], client, server
