"""``make bench``: the sync agent and the virtual meter, measured end to end.

    .venv/bin/python bench/run.py [--quick] [--no-write] [--only NAME ...]

Every scenario runs a real ``meter-sim serve --pty`` process (which paces the line
at 10 bits per byte, ``firmware_sim/line.py``) and the real agent
(``agent.cli.main`` in this process, interpreter start-up excluded; one row
also times the ``meter-sync`` console script).  Each is repeated and reported as
median and spread (min-max).  The table is printed with rich and written, with
the machine and one paragraph per scenario, to docs/BENCHMARKS.md (unless
``--no-write``; ``--quick`` never overwrites the full results unless asked with
``--write``).  See docs/BENCHMARKS.md for what each number means.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen
import harness
from harness import Line, MeterProcess, Run

from agent.csvio import import_file
from agent.plan import project
from agent.store import SharedList

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BENCHMARKS.md"


# ------------------------------------------------------------------ results


@dataclass
class Row:
    scenario: str
    line: Line | None
    runs: list[Run]
    accounts: int = 0  # accounts the scenario moves (records sent, mail runs)
    content: int = 0  # record content bytes: code + name + parent + password
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def spread(self) -> tuple[float, float]:
        return min(r.seconds for r in self.runs), max(r.seconds for r in self.runs)

    @property
    def sent(self) -> int:
        return int(statistics.median(r.sent for r in self.runs))

    @property
    def received(self) -> int:
        return int(statistics.median(r.received for r in self.runs))

    @property
    def wire(self) -> float | None:
        return self.line.wire_seconds(self.sent) if self.line else None

    @property
    def limit(self) -> float | None:
        return self.line.wire_seconds(self.content) if self.line and self.content else None


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    return f"{x:.2f} s"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def table_rows(rows: Sequence[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        lo, hi = r.spread
        wire, limit = r.wire, r.limit
        out.append(
            [
                r.scenario,
                r.line.label if r.line else "-",
                str(len(r.runs)),
                fmt_s(r.seconds),
                f"{fmt_s(lo)}-{fmt_s(hi)}" if len(r.runs) > 1 else "",
                f"{r.sent:,}" if r.sent else "-",
                f"{r.received:,}" if r.received else "-",
                f"{r.sent / r.accounts:.1f}" if r.accounts and r.sent else "-",
                fmt_ratio(r.sent / r.content) if r.content and r.sent else "-",
                fmt_ratio(r.seconds / wire) if wire else "-",
                fmt_ratio(r.seconds / limit) if limit else "-",
                r.note,
            ]
        )
    return out


HEADERS = [
    "scenario",
    "line",
    "n",
    "median",
    "spread",
    "bytes sent",
    "bytes recv",
    "B/account",
    "sent/content",
    "elapsed/wire",
    "elapsed/limit",
    "notes",
]


# ------------------------------------------------------------------ set-up


@dataclass
class Setup:
    work: Path
    chargeable: int
    base_db: Path
    base_csv: Path
    rows: list[gen.Row]
    content: int  # record content of the whole projected list
    accounts: int  # accounts in the projected list
    serial: int = 0

    def fresh_db(self) -> Path:
        self.serial += 1
        return harness.copy_db(self.base_db, self.work / f"agent-{self.serial}.db")

    def fresh_state(self) -> Path:
        self.serial += 1
        return self.work / f"meter-{self.serial}.nvm"


def record_content(db: Path, codes: set[str] | None = None) -> tuple[int, int]:
    """(accounts, content bytes) of the projected list, or of ``codes`` in it."""
    with SharedList.open(db) as store:
        projection = project(a.to_record() for a in store.accounts())
    total = n = 0
    for r in projection.records:
        if codes is None or r.code in codes:
            n += 1
            total += sum(
                len(s.encode("utf-8")) for s in (r.code, r.name, r.parent_code, r.password)
            )
    return n, total


def make_setup(work: Path, chargeable: int) -> Setup:
    rows = gen.generate(chargeable)
    csv_path = work / "shared-list.csv"
    csv_path.write_text(gen.to_csv(rows), encoding="utf-8")
    db = work / "base.db"
    with SharedList.open(db) as store:
        plan = import_file(store, csv_path)
        if not plan.ok:
            raise SystemExit("\n".join(plan.error_lines()[:5]))
    accounts, content = record_content(db)
    return Setup(work, chargeable, db, csv_path, rows, content, accounts)


def rename(setup: Setup, db: Path, leaves: Sequence[gen.Row], tag: str) -> set[str]:
    """Rename ``leaves`` in the shared list (an import of just those rows)."""
    changed = [
        gen.Row(f"Desk {tag} {i}", r.code, r.active, r.password, r.parent, r.grandparent)
        for i, r in enumerate(leaves)
    ]
    path = setup.work / f"change-{tag}.csv"
    path.write_text(gen.to_csv(changed), encoding="utf-8")
    with SharedList.open(db) as store:
        plan = import_file(store, path)
        if not plan.ok:
            raise SystemExit("\n".join(plan.error_lines()[:5]))
    return {r.code for r in changed}


# ------------------------------------------------------------------ scenarios


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def line_scenarios(
    setup: Setup,
    line: Line,
    reps: int,
    naive: bool,
    deltas: bool = True,
    naive_delta: bool = True,
) -> list[Row]:
    """Full first sync (each on an empty meter), then no-change, 1 change, 1 %."""
    rows: list[Row] = []
    full: list[Run] = []
    for i in range(reps):
        with MeterProcess(setup.fresh_state(), line) as meter:
            db = setup.fresh_db()
            say(f"  {line.label}: full sync {i + 1}/{reps}")
            full.append(harness.agent_sync(db, meter.port, line))
            if i < reps - 1 or not deltas:
                continue
            rows.append(Row("full sync", line, full, setup.accounts, setup.content))
            nochange = []
            for _ in range(max(reps, 3)):
                nochange.append(harness.agent_sync(db, meter.port, line))
            rows.append(Row("no change", line, nochange, note=_exchanges(nochange)))
            leaves = [r for r in setup.rows if r.grandparent]
            one, pct = [], []
            one_content = 0
            for k in range(max(reps, 3)):
                codes = rename(setup, db, [leaves[(k * 37) % len(leaves)]], f"o{k}")
                one_content = record_content(db, codes)[1]
                one.append(harness.agent_sync(db, meter.port, line))
            step = max(1, len(leaves) // max(1, setup.chargeable // 100))
            sample = leaves[::step][: max(1, setup.chargeable // 100)]
            pct_content = 0
            for k in range(reps):
                codes = rename(setup, db, sample, f"p{k}")
                pct_content = record_content(db, codes)[1]
                pct.append(harness.agent_sync(db, meter.port, line))
            rows.append(Row("1 change", line, one, 1, one_content, note=_vs(one, full, "of full")))
            rows.append(
                Row(
                    f"{len(sample)} changes (1%)",
                    line,
                    pct,
                    len(sample),
                    pct_content,
                    note=_vs(pct, full, "of full"),
                )
            )
            if naive and naive_delta:
                say(f"  {line.label}: naive re-push after one change")
                rename(setup, db, [leaves[5]], "n")
                naive_one = harness.naive_sync(db, meter.port, line)
                mine = statistics.median(r.seconds for r in one)
                rows.append(
                    Row(
                        "naive, 1 change",
                        line,
                        [naive_one],
                        setup.accounts,
                        setup.content,
                        note=f"agent 1 change {fmt_s(mine)}: "
                        f"{naive_one.seconds / mine:.0f}x faster",
                    )
                )
    if not deltas:
        rows.append(Row("full sync", line, full, setup.accounts, setup.content))
    if naive:
        with MeterProcess(setup.fresh_state(), line) as meter:
            say(f"  {line.label}: naive full push")
            run = harness.naive_sync(setup.fresh_db(), meter.port, line)
        full_median = statistics.median(r.seconds for r in full)
        rows.append(
            Row(
                "naive full",
                line,
                [run],
                setup.accounts,
                setup.content,
                note=f"agent {run.seconds / full_median:.1f}x faster",
            )
        )
    return rows


def _exchanges(runs: Sequence[Run]) -> str:
    ex = sorted({r.exchanges for r in runs})
    return f"{'/'.join(map(str, ex))} exchange{'s' if ex != [1] else ''}"


def _vs(runs: Sequence[Run], full: Sequence[Run], what: str) -> str:
    b = statistics.median(r.sent for r in runs) / statistics.median(r.sent for r in full)
    t = statistics.median(r.seconds for r in runs) / statistics.median(r.seconds for r in full)
    return f"{b:.2%} bytes, {t:.2%} time {what}"


def cli_row(setup: Setup, line: Line) -> Row:
    """The no-change sync through the console script (interpreter start-up included)."""
    with MeterProcess(setup.fresh_state(), line) as meter:
        db = setup.fresh_db()
        harness.agent_sync(db, meter.port, line)
        runs = [harness.agent_sync_subprocess(db, meter.port, line) for _ in range(3)]
    for r in runs:
        r.received = 0
    return Row("no change, meter-sync CLI", line, runs, note="incl. interpreter start-up")


def unpaced_rows(setup: Setup, reps: int) -> list[Row]:
    line = Line()
    rows = line_scenarios(setup, line, reps, naive=True, deltas=False)
    for r in rows:
        if r.scenario == "full sync":
            r.note = f"{setup.accounts / r.seconds:,.0f} accounts/s"
    return rows


def import_row(work: Path, n: int, reps: int) -> Row:
    rows = gen.flat_rows(n)
    path = work / f"import-{n}.csv"
    path.write_text(gen.to_csv(rows), encoding="utf-8")
    runs: list[Run] = []
    peak = 0
    for i in range(reps):
        db = work / f"import-{n}-{i}.db"
        say(f"  import {n:,} rows {i + 1}/{reps}")
        seconds, rss, code = harness.timed_child(
            [str(harness.BIN / "meter-sync"), "--db", str(db), "import", str(path)]
        )
        if code != 0:
            raise SystemExit(f"import failed with exit code {code}")
        peak = max(peak, rss)
        runs.append(Run(seconds, 0, 0))
    row = Row(f"import {n:,} rows", None, runs, note=f"peak RSS {peak / 2**20:.0f} MB (subprocess)")
    row.extra["rss"] = peak
    return row


def mail_rows(setup: Setup, seconds_each: float) -> list[Row]:
    rows = []
    numbers: list[int] = []
    line = Line()
    with MeterProcess(setup.fresh_state(), line) as meter:
        db = setup.fresh_db()
        harness.agent_sync(db, meter.port, line)
        from protocol.client import MeterClient
        from protocol.messages import AccountPage, ReadAccounts

        with MeterClient.connect(meter.port) as client:
            page = client.call(ReadAccounts(0, 0xFFFF), AccountPage)
        numbers = [e.number for e in page.entries if e.chargeable and not e.password_enabled][:50]
        for window in (1, 8):
            runs = []
            for _ in range(3):
                batch = numbers * max(1, int(seconds_each * 200 / len(numbers)))
                runs.append(harness.mail_runs(meter.port, batch, window))
            count = runs[0].exchanges
            rate = statistics.median(count / r.seconds for r in runs)
            rows.append(
                Row(
                    f"mail runs, window {window}",
                    line,
                    runs,
                    count,
                    note=f"{rate:,.0f} runs/s ({count} runs each, durable)",
                )
            )
            rows[-1].extra["rate"] = rate
    return rows


# ------------------------------------------------------------------ output


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def print_table(rows: Sequence[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*HEADERS, title=title)
    for cells in table_rows(rows):
        table.add_row(*cells)
    Console(width=220).print(table)


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for cells in table_rows(rows):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def targets(rows: Sequence[Row]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each bar in the issue."""

    def find(scenario: str, label: str) -> Row | None:
        for r in rows:
            if r.scenario == scenario and r.line is not None and r.line.label == label:
                return r
        return None

    out: list[tuple[str, str, bool | None]] = []
    for label, bar in (("115200 baud", 1.10), ("9600 baud", 1.10), ("115200 baud +16 ms", 1.20)):
        r = find("full sync", label)
        if r is None or r.wire is None:
            out.append((f"full sync {label}: elapsed <= {bar:.2f} x wire", "not run", None))
            continue
        ratio = r.seconds / r.wire
        out.append(
            (
                f"full sync {label}: elapsed <= {bar:.2f} x wire time of bytes sent",
                f"{ratio:.3f}x",
                ratio <= bar,
            )
        )
        sc = r.sent / r.content
        out.append(
            (f"full sync {label}: bytes sent <= 1.15 x record content", f"{sc:.3f}x", sc <= 1.15)
        )
    r = find("no change", "115200 baud")
    if r:
        ex = max(x.exchanges for x in r.runs)
        out.append(
            (
                "no-change sync: one exchange, < 0.1 s at 115200",
                f"{ex} exchange, {fmt_s(r.seconds)}",
                ex == 1 and r.seconds < 0.1,
            )
        )
    one, full = find("1 change", "115200 baud"), find("full sync", "115200 baud")
    if one and full:
        b, t = one.sent / full.sent, one.seconds / full.seconds
        out.append(
            (
                "1 change in 3,000: < 1% of the full sync's bytes and time",
                f"{b:.2%} bytes, {t:.2%} time",
                b < 0.01 and t < 0.01,
            )
        )
    r = find("full sync", "unpaced")
    if r:
        out.append(("unpaced full sync < 1 s inside the agent", fmt_s(r.seconds), r.seconds < 1))
    for r in rows:
        if r.scenario.startswith("import"):
            rss = r.extra["rss"] / 2**20
            out.append(
                (
                    f"{r.scenario}: < 5 s and < 300 MB peak RSS",
                    f"{fmt_s(r.seconds)}, {rss:.0f} MB",
                    r.seconds < 5 and rss < 300,
                )
            )
    naive, mine = find("naive full", "115200 baud +16 ms"), find("full sync", "115200 baud +16 ms")
    if naive and mine:
        x = naive.seconds / mine.seconds
        out.append((">= 2x faster than naive, full sync at 16 ms latency", f"{x:.1f}x", x >= 2))
    naive1, one = find("naive, 1 change", "115200 baud"), find("1 change", "115200 baud")
    if naive1 and one:
        x = naive1.seconds / one.seconds
        out.append((">= 50x faster than naive on a one-change sync", f"{x:.0f}x", x >= 50))
    return out


def write_doc(
    rows: Sequence[Row], info: dict[str, str], quick: bool, total: float, chargeable: int
) -> None:
    from bench_doc import render

    DOC.write_text(
        render(rows, info, quick, total, chargeable, markdown_table(rows), targets(rows)),
        encoding="utf-8",
    )


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller and faster (< 2 minutes)")
    ap.add_argument("--write", action="store_true", help="write docs/BENCHMARKS.md even if --quick")
    ap.add_argument("--no-write", action="store_true", help="do not write docs/BENCHMARKS.md")
    ap.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="115200 9600 latency unpaced cli import mail (default: all)",
    )
    args = ap.parse_args(argv)
    quick = args.quick
    chargeable = 300 if quick else 3000
    reps = 2 if quick else 3
    wanted = set(args.only) if args.only else None

    def on(name: str) -> bool:
        return wanted is None or name in wanted

    busy = _others_running()
    if busy:
        say(f"note: other test processes are running ({busy}); numbers may be noisy")
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="meterlink-bench-") as tmp:
        work = Path(tmp)
        say(f"generating and importing a {chargeable:,}-account list")
        setup = make_setup(work, chargeable)
        harness.agent_sync  # noqa: B018 - imports are done: nothing below pays for them
        steps: list[tuple[str, Callable[[], list[Row]]]] = [
            ("115200", lambda: line_scenarios(setup, Line(115200), reps, naive=True)),
            ("9600", lambda: line_scenarios(setup, Line(9600), 1, naive=False)),
            (
                "latency",
                lambda: line_scenarios(
                    setup, Line(115200, 16), reps, naive=True, deltas=not quick, naive_delta=False
                ),
            ),
            ("unpaced", lambda: unpaced_rows(setup, 5 if not quick else 3)),
            ("cli", lambda: [cli_row(setup, Line(115200))]),
            ("import", lambda: [import_row(work, 10_000 if quick else 100_000, 2 if quick else 3)]),
            ("mail", lambda: mail_rows(setup, 1.0 if quick else 3.0)),
        ]
        for name, step in steps:
            if not on(name) or (quick and name == "9600"):
                continue
            say(f"{name}:")
            rows += step()
    total = time.perf_counter() - started
    info = machine()
    title = (
        f"meterlink benchmarks: {chargeable:,} chargeable accounts"
        f"{' (quick)' if quick else ''}, {info['date']}"
    )
    print_table(rows, title)
    for target, measured, met in targets(rows):
        mark = "n/a" if met is None else ("MET" if met else "MISSED")
        print(f"  [{mark:6}] {target}: {measured}")
    print(f"total {total:.0f} s")
    if not args.no_write and (not quick or args.write):
        write_doc(rows, info, quick, total, chargeable)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


def _others_running() -> str:
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,args"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return ""
    mine = str(os.getpid())
    hits = [
        ln.split(None, 1)[0]
        for ln in out.splitlines()
        if "pytest" in ln and not ln.strip().startswith(mine)
    ]
    return f"pytest pids {', '.join(hits)}" if hits else ""


if __name__ == "__main__":
    raise SystemExit(main())
