"""`meter-sim`: the virtual meter's command line.

    meter-sim serve --state FILE (--pty [--link PATH] | --port DEVICE_OR_URL | --tcp HOST:PORT)
                    [--capacity N] [--supervisor-password PW] [--serial SN] [--count N]
                    [--baud N] [--latency-ms N] [--fault SPEC] [--seed N] [--trace FILE]
    meter-sim mail --port P --account N [--password PW] --postage 0.730 [--pieces 1]
                   [--duration-ms 0]
    meter-sim report --port P [--supervisor-password PW]

Exit codes: 0 ok, 1 failure, 2 bad input, 3 refused by the meter.  See docs/SIMULATOR.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import zlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import FrameType

from firmware_sim.accounts import CAPACITY_TIERS, AccountBook, Settings, Supervisor
from firmware_sim.line import FaultSpec, FaultSpecError, LineConfig, parse_fault_spec
from firmware_sim.meter import Meter
from firmware_sim.nvm import Nvm, NvmError
from firmware_sim.server import MeterServer, stop_all
from firmware_sim.trace import Tracer
from protocol.client import MeterClient, MeterError, read_all_accounts
from protocol.link import LinkError, PtyMaster, SerialLink, TcpListener, Transport
from protocol.messages import AccountEntry, MailDone, RunMail

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_REFUSED = 0, 1, 2, 3
PASSWORD_ENV = "METER_SUPERVISOR_PASSWORD"  # noqa: S105 - a variable name, not a secret
ACCOUNT_PASSWORD_ENV = "METER_ACCOUNT_PASSWORD"  # noqa: S105
MAX_COUNT = 64


class BadInput(Exception):
    """Bad command-line input (exit 2)."""


# ------------------------------------------------------------------ parsing


def parse_mills(text: str) -> int:
    """Dollars with at most 3 decimals ("0.730", "12", "1.5") to integer mills.

    Decimal, never float: "0.1" is exactly 100 mills.
    """
    s = text.strip()
    if not s or s[0] in "+-" or any(c not in "0123456789." for c in s) or s.count(".") > 1:
        raise BadInput(f"postage {text!r}: expected dollars like 0.730")
    if s == ".":
        raise BadInput(f"postage {text!r}: expected dollars like 0.730")
    try:
        value = Decimal(s)
    except InvalidOperation:
        raise BadInput(f"postage {text!r}: expected dollars like 0.730") from None
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if "." in s and len(s.split(".", 1)[1]) > 3:
        raise BadInput(f"postage {text!r}: at most 3 decimals (tenths of a cent)")
    mills = value * 1000
    if mills != mills.to_integral_value():
        raise BadInput(f"postage {text!r}: at most 3 decimals (tenths of a cent)")
    return int(mills)


def format_mills(mills: int) -> str:
    sign = "-" if mills < 0 else ""
    dollars, rest = divmod(abs(mills), 1000)
    return f"{sign}${dollars:,}.{rest:03d}"


def _positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _capacity(text: str) -> int:
    value = _positive_int(text)
    if value not in CAPACITY_TIERS:
        tiers = "/".join(str(t) for t in CAPACITY_TIERS)
        raise argparse.ArgumentTypeError(f"capacity {value} is not a tier ({tiers})")
    return value


def _fault(text: str) -> FaultSpec:
    try:
        return parse_fault_spec(text)
    except FaultSpecError as exc:
        raise argparse.ArgumentTypeError(f"bad --fault SPEC: {exc}") from None


def _host_port(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    try:
        number = int(port, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: port is not a number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port out of range")
    return host.strip("[]"), number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meter-sim", description="A virtual DM800i-style meter.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve a virtual meter on a pty, a port or TCP")
    serve.add_argument(
        "--state",
        required=True,
        metavar="FILE",
        help="the meter's NVM file (created on first start)",
    )
    where = serve.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument(
        "--port", metavar="DEVICE_OR_URL", help="serve on a serial device or a pyserial URL"
    )
    where.add_argument(
        "--tcp",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve on TCP (clients use socket://HOST:PORT)",
    )
    serve.add_argument(
        "--link", metavar="PATH", help="with --pty: a stable symlink to the pty (removed on exit)"
    )
    serve.add_argument(
        "--capacity",
        type=_capacity,
        metavar="N",
        help="account capacity on first start: 25/100/300/500/3000 (default 25)",
    )
    serve.add_argument(
        "--supervisor-password",
        metavar="PW",
        help=f"supervisor password on first start (or env {PASSWORD_ENV})",
    )
    serve.add_argument(
        "--serial", metavar="SN", help="serial number (default: from the state file name)"
    )
    serve.add_argument(
        "--count",
        type=_positive_int,
        default=1,
        metavar="N",
        help="serve N meters (states FILE-1..FILE-N, or N files in a directory)",
    )
    serve.add_argument(
        "--baud", type=_positive_int, metavar="N", help="pace the line at N baud (10 bits per byte)"
    )
    serve.add_argument(
        "--latency-ms",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="deliver every chunk N ms late (USB adapter latency)",
    )
    serve.add_argument(
        "--fault",
        type=_fault,
        default=FaultSpec(),
        metavar="SPEC",
        help="seeded line faults, e.g. corrupt=0.001,drop=0.001,delay=0.01:50ms",
    )
    serve.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="seed for --fault (default 0)",
    )
    serve.add_argument("--trace", metavar="FILE", help="write a frame trace (mode 0600)")

    mail = sub.add_parser("mail", help="run mail on a meter through the protocol")
    mail.add_argument("--port", required=True, metavar="P", help="pty path or pyserial URL")
    mail.add_argument("--account", required=True, type=_positive_int, metavar="N")
    mail.add_argument(
        "--password", metavar="PW", help=f"the account's password (or env {ACCOUNT_PASSWORD_ENV})"
    )
    mail.add_argument(
        "--postage",
        required=True,
        metavar="DOLLARS",
        help="postage per piece in dollars, up to 3 decimals (0.730)",
    )
    mail.add_argument("--pieces", type=_positive_int, default=1, metavar="N")
    mail.add_argument(
        "--duration-ms",
        type=_non_negative_int,
        default=0,
        metavar="MS",
        help="how long the run keeps the meter busy",
    )
    mail.add_argument("--baud", type=_positive_int, default=115200, metavar="N")
    mail.add_argument(
        "--open-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the port to appear (default 5)",
    )

    report = sub.add_parser("report", help="print the multi-account summary")
    report.add_argument("--port", required=True, metavar="P", help="pty path or pyserial URL")
    report.add_argument("--baud", type=_positive_int, default=115200, metavar="N")
    report.add_argument("--open-timeout", type=float, default=5.0, metavar="SECONDS")
    return parser


# -------------------------------------------------------------------- serve


def default_serial(state: Path) -> str:
    """A stable serial number derived from the state file's name."""
    return f"VM{zlib.crc32(state.name.encode('utf-8')) % 10**7:07d}"


@dataclass
class MeterSpec:
    state: Path
    serial: str
    link: Path | None


def _numbered(path: Path, i: int) -> Path:
    return path.with_name(f"{path.stem}-{i}{path.suffix}") if path.suffix else Path(f"{path}-{i}")


def meter_specs(args: argparse.Namespace) -> list[MeterSpec]:
    state = Path(args.state)
    link = Path(args.link) if args.link else None
    if args.count == 1 and not state.is_dir():
        return [MeterSpec(state, args.serial or default_serial(state), link)]
    if args.count > MAX_COUNT:
        raise BadInput(f"--count: at most {MAX_COUNT} meters per process")
    specs = []
    for i in range(1, args.count + 1):
        path = state / f"meter-{i}.nvm" if state.is_dir() else _numbered(state, i)
        serial = f"{args.serial}-{i}" if args.serial else default_serial(path)
        specs.append(MeterSpec(path, serial, _numbered(link, i) if link else None))
    if len({s.serial for s in specs}) != len(specs):
        raise BadInput("the meters' serial numbers are not distinct; give --serial")
    return specs


def prepare_state(spec: MeterSpec, capacity: int | None, password: str | None) -> None:
    """Create the NVM on first start; on later starts say what is kept."""
    first = not spec.state.exists() or spec.state.stat().st_size == 0

    def factory() -> tuple[AccountBook, Supervisor]:
        sup = Supervisor()
        if password:
            sup.set_password(password)
        return AccountBook(Settings(capacity=capacity or 25)), sup

    with Nvm.open(spec.state, factory=factory) as nvm:
        loaded = nvm.load()
    if first:
        return
    stored = loaded.settings.capacity
    if capacity is not None and capacity != stored:
        print(
            f"meter-sim: {spec.state}: keeping the stored capacity {stored} "
            f"(--capacity {capacity} applies on first start only)",
            file=sys.stderr,
        )
    if password:
        print(
            f"meter-sim: {spec.state}: the supervisor password is set on first start only; "
            "keeping the stored one",
            file=sys.stderr,
        )


def _open_transport(args: argparse.Namespace) -> tuple[Transport, str, LineConfig | None]:
    """The transport, the address to announce, and a line override (None: keep)."""
    if args.pty:
        pty = PtyMaster()
        return pty, pty.slave_path, None
    if args.tcp is not None:
        host, port = args.tcp
        tcp = TcpListener(host, port)
        return tcp, tcp.url, None
    url = args.port
    link = SerialLink.open(url, baudrate=args.baud or 115200)
    return link, url, None


def _is_device(url: str) -> bool:
    return "://" not in url


def _install_signals(stop: threading.Event) -> Callable[[], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, h in old.items():
            signal.signal(sig, h)

    return restore


def serve(args: argparse.Namespace) -> int:
    if args.link and not args.pty:
        raise BadInput("--link needs --pty")
    if args.count > 1 and args.port:
        raise BadInput("--count needs --pty or --tcp")
    if args.count > 1 and args.tcp and args.tcp[1] != 0:
        raise BadInput("--count with --tcp needs port 0 (each meter gets its own port)")
    password = args.supervisor_password or os.environ.get(PASSWORD_ENV) or None
    if password is not None and len(password) < 4:
        raise BadInput("the supervisor password needs 4 or more characters")
    specs = meter_specs(args)
    for spec in specs:
        try:
            prepare_state(spec, args.capacity, password)
        except NvmError as exc:
            print(f"meter-sim: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    line = LineConfig(
        baud=args.baud if not (args.port and _is_device(args.port)) else None,
        latency=args.latency_ms / 1000.0,
        faults=args.fault,
        seed=args.seed,
    )
    stop = threading.Event()
    restore = _install_signals(stop)
    tracer = Tracer(args.trace) if args.trace else None
    servers: list[MeterServer] = []
    links: list[Path] = []
    try:
        for i, spec in enumerate(specs):
            transport, address, _ = _open_transport(args)
            if spec.link is not None:
                with suppress(FileNotFoundError):
                    if spec.link.is_symlink():
                        spec.link.unlink()
                spec.link.symlink_to(address)
                links.append(spec.link)
            # each meter's faults get their own seed, so meters do not share noise
            cfg = LineConfig(line.baud, line.latency, line.faults, line.seed + i)
            server = MeterServer(
                transport, _meter_opener(spec), cfg, label=spec.serial, tracer=tracer
            )
            servers.append(server.start())
            server.ready.wait()
            if server.error is not None:
                raise server.error
            print(f"listening on {address}", flush=True)
        while not stop.wait(0.2):
            failed = [s for s in servers if not s.alive]
            if failed:
                for s in failed:
                    print(f"meter-sim: meter {s.label} stopped: {s.error}", file=sys.stderr)
                return EXIT_FAILURE
        return EXIT_OK
    except (LinkError, NvmError, OSError) as exc:
        print(f"meter-sim: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        stop_all(servers)
        for path in links:
            with suppress(OSError):
                path.unlink()
        if tracer is not None:
            tracer.close()
        restore()


def _meter_opener(spec: MeterSpec) -> Callable[[], Meter]:
    def open_meter() -> Meter:
        nvm = Nvm.open(spec.state)
        try:
            return Meter.from_nvm(nvm, spec.serial)
        except BaseException:
            nvm.close()
            raise

    return open_meter


# ----------------------------------------------------------- mail / report


def summary_lines(entries: list[AccountEntry]) -> list[str]:
    """The multi-account summary: numbers on lowest-level lines only, a subtotal per
    parent, grand totals at the end."""
    children: dict[str, list[AccountEntry]] = {}
    for e in entries:
        children.setdefault(e.parent_code, []).append(e)
    lines = [f"{'No.':>5}  {'Account':<40} {'Pieces':>10} {'Postage':>16}"]

    def walk(parent: str, depth: int) -> tuple[int, int]:
        pieces = mills = 0
        for e in children.get(parent, []):
            name = ("  " * depth + e.name + ("" if e.active else " (inactive)"))[:40]
            if e.code in children:
                lines.append(f"{'':>5}  {name:<40}")
                p, m = walk(e.code, depth + 1)
                label = ("  " * depth + f"Subtotal {e.name}")[:40]
                lines.append(f"{'':>5}  {label:<40} {p:>10} {format_mills(m):>16}")
            else:
                p, m = e.pieces, e.postage_mills
                lines.append(f"{e.number:>5}  {name:<40} {p:>10} {format_mills(m):>16}")
            pieces += p
            mills += m
        return pieces, mills

    pieces, mills = walk("", 0)
    lines.append(f"{'':>5}  {'Total':<40} {pieces:>10} {format_mills(mills):>16}")
    return lines


def _client(args: argparse.Namespace) -> MeterClient:
    return MeterClient.connect(args.port, baudrate=args.baud, open_timeout=args.open_timeout)


def mail(args: argparse.Namespace) -> int:
    per_piece = parse_mills(args.postage)
    total = per_piece * args.pieces
    if total >= 2**32:
        raise BadInput("the run's postage is too large for one run")
    if args.duration_ms > 0xFFFF:
        raise BadInput("--duration-ms: at most 65535")
    if args.pieces >= 2**32:
        raise BadInput("--pieces: too many for one run")
    if args.account > 0xFFFF:
        raise BadInput("--account: at most 65535")
    password = args.password or os.environ.get(ACCOUNT_PASSWORD_ENV) or ""
    with _client(args) as client:
        done = client.call(
            RunMail(args.account, password, args.pieces, total, args.duration_ms), expect=MailDone
        )
    print(
        f"account {done.number}: charged {args.pieces} x {format_mills(per_piece)} "
        f"= {format_mills(total)}"
    )
    print(
        f"account {done.number}: {done.pieces} pieces, {format_mills(done.postage_mills)} "
        "since last cleared"
    )
    return EXIT_OK


def report(args: argparse.Namespace) -> int:
    with _client(args) as client:
        identity = client.identity
        entries = read_all_accounts(client)
    assert identity is not None
    print(f"{identity.model} {identity.serial}: multi-account summary")
    for line in summary_lines(entries):
        print(line)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    handlers = {"serve": serve, "mail": mail, "report": report}
    try:
        return handlers[args.command](args)
    except BadInput as exc:
        print(f"meter-sim: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MeterError as exc:
        print(f"meter-sim: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (LinkError, NvmError, OSError) as exc:
        print(f"meter-sim: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
