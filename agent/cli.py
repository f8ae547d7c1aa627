"""`meter-sync`: the sync agent's command line.

Exit codes: 0 ok, 1 failed, 2 bad input.  Passwords are never printed.

Adding a subcommand from another module: give the module a function
``add_parser(subparsers) -> None`` that adds its parser and sets
``func=handler`` (``handler(args) -> int``) with ``set_defaults``, then list the
module in :data:`COMMAND_MODULES`.  Use :func:`open_store` to reach the shared
list (it honours ``--db`` and ``$METERLINK_DB``).  A new way of reaching a
meter for ``attach`` (e.g. ``--port``) is an :class:`AttachSource` appended to
:data:`ATTACH_SOURCES`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agent.attach import AttachError, Choice, FileListSource, MeterListSource, attach
from agent.csvio import Format, ImportPlan, Mode, export_file, import_file, write_private
from agent.csvio import template_text as _template_text
from agent.paths import resolve_db_path
from agent.rules import Policy, PolicyKind
from agent.store import Change, SharedAccount, SharedList, StoreError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

#: Modules that contribute subcommands (each exposes ``add_parser(subparsers)``).
COMMAND_MODULES: list[str] = ["agent.report", "agent.sync", "agent.conformance_cmd"]

#: How many accounts of each kind an import report names before summarising.
REPORT_LIMIT = 20


@dataclass(frozen=True)
class AttachSource:
    """One way for ``attach`` to reach a meter."""

    add_arguments: Callable[[argparse._MutuallyExclusiveGroup], None]
    make: Callable[[argparse.Namespace], MeterListSource | None]  # None: option not given


def _file_source_args(group: argparse._MutuallyExclusiveGroup) -> None:
    group.add_argument("--from-file", metavar="FILE", help="a meter list backup file (JSON)")


def _file_source(args: argparse.Namespace) -> MeterListSource | None:
    return FileListSource(args.from_file) if getattr(args, "from_file", None) else None


def _port_source_args(group: argparse._MutuallyExclusiveGroup) -> None:
    group.add_argument(
        "--port", metavar="P", help="the meter's port or URL (reads it over the protocol)"
    )


def _port_source(args: argparse.Namespace) -> MeterListSource | None:
    if not getattr(args, "port", None):
        return None
    from agent.inventory import MeterTarget
    from agent.sync import MeterSource

    password = getattr(args, "supervisor_password", None) or os.environ.get(
        "METER_SUPERVISOR_PASSWORD"
    )
    return MeterSource(MeterTarget(port=args.port, baud=args.baud, supervisor_password=password))


ATTACH_SOURCES: list[AttachSource] = [
    AttachSource(_file_source_args, _file_source),
    AttachSource(_port_source_args, _port_source),
]


class BadInput(Exception):
    """The user's input is wrong (exit 2)."""


# --------------------------------------------------------------------------- helpers


def open_store(args: argparse.Namespace) -> SharedList:
    """The shared list named by ``--db``, ``$METERLINK_DB`` or the user data directory."""
    return SharedList.open(resolve_db_path(getattr(args, "db", None)))


def _policy(args: argparse.Namespace) -> Policy:
    return Policy(PolicyKind(args.policy), hierarchy_display=args.hierarchy_display)


def _add_policy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        choices=[p.value for p in PolicyKind],
        default=PolicyKind.COST_ACCOUNTING.value,
        help="character rules: with the Cost Accounting service (default) or standalone",
    )
    parser.add_argument(
        "--no-hierarchy-display",
        dest="hierarchy_display",
        action="store_false",
        help="standalone policy: hierarchy display is off, so '-' is allowed",
    )


def _format_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=[f.value for f in Format],
        default=Format.PITNEYSHIP.value,
        help="file format (default pitneyship)",
    )


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on a terminal; nothing otherwise."""
    if not enabled:
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("reading", total=total)

        def update(done: int) -> None:
            bar.update(task, completed=done)

        yield update


def _account_label(acc: SharedAccount) -> str:
    return f"{acc.name} [{acc.code}]"


def _print_list(title: str, items: list[str]) -> None:
    if not items:
        return
    print(f"{title} ({len(items)}):")
    for line in items[:REPORT_LIMIT]:
        print(f"  {line}")
    if len(items) > REPORT_LIMIT:
        print(f"  ... and {len(items) - REPORT_LIMIT} more")


def _change_label(c: Change) -> str:
    fields = ", ".join("password" if f == "password" else f for f in c.fields)
    return f"{_account_label(c.after)}: {fields}"


def print_plan(plan: ImportPlan) -> None:
    _print_list("added", [_account_label(a) for a in plan.added])
    _print_list("changed", [_change_label(c) for c in plan.changed])
    _print_list("deactivated", [_account_label(c.after) for c in plan.deactivated])
    print(plan.summary())


# --------------------------------------------------------------------------- import


def _cmd_import(args: argparse.Namespace) -> int:
    try:
        data_size = sum(1 for _ in open(args.file, "rb"))  # noqa: SIM115 - line count only
    except OSError as exc:
        raise BadInput(f"{args.file}: {exc.strerror}") from None
    with open_store(args) as store, _progress(sys.stdout.isatty(), data_size) as progress:
        plan = import_file(
            store,
            args.file,
            policy=_policy(args),
            mode=Mode(args.mode),
            dry_run=args.dry_run,
            progress=progress,
        )
    if not plan.ok:
        for line in plan.error_lines():
            print(line, file=sys.stderr)
        print(plan.summary(), file=sys.stderr)
        return EXIT_BAD_INPUT
    print_plan(plan)
    if args.dry_run:
        print("dry run: nothing written")
    return EXIT_OK


def _add_import(sub: Any) -> None:
    p = sub.add_parser("import", help="import a shared-list CSV (PitneyShip or Cost Accounting)")
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.UPDATE.value,
        help="update: add and change, leave other accounts alone (default); "
        "replace: the file becomes the list, absent accounts are deactivated",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    _add_policy_args(p)
    p.set_defaults(func=_cmd_import)


# --------------------------------------------------------------------------- export / template


def _cmd_export(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        accounts = store.accounts()
    try:
        export_file(accounts, args.file, Format(args.format))
    except OSError as exc:
        raise BadInput(f"{args.file}: {exc.strerror}") from None
    print(f"{args.file}: {len(accounts)} accounts exported ({args.format})")
    return EXIT_OK


def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="write the shared list to a CSV file (0600: has passwords)")
    p.add_argument("file", metavar="FILE")
    _format_arg(p)
    p.set_defaults(func=_cmd_export)


def _cmd_template(args: argparse.Namespace) -> int:
    try:
        write_private(args.file, _template_text(Format(args.format)))
    except OSError as exc:
        raise BadInput(f"{args.file}: {exc.strerror}") from None
    print(f"{args.file}: empty {args.format} template written")
    return EXIT_OK


def _add_template(sub: Any) -> None:
    p = sub.add_parser("template", help="write an empty import template (header only)")
    p.add_argument("file", metavar="FILE")
    _format_arg(p)
    p.set_defaults(func=_cmd_template)


# --------------------------------------------------------------------------- list


def account_json(acc: SharedAccount) -> dict[str, Any]:
    """An account for scripts: everything but the password."""
    return {
        "code": acc.code,
        "name": acc.name,
        "parent_code": acc.parent_code,
        "description": acc.description,
        "active": acc.active,
        "password": acc.password_enabled,
        "billable": acc.billable,
        "access_level": acc.access_level,
        "access_level_value": acc.access_level_value,
        "division": acc.division,
        "archived": acc.archived,
    }


def _cmd_list(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        accounts = store.accounts()
        products = store.products()
    if args.json:
        doc = {
            "accounts": [account_json(a) for a in accounts],
            "products": [
                {
                    "serial": p.serial,
                    "model": p.model,
                    "choice": p.choice,
                    "attached_at": p.attached_at.isoformat(),
                    "last_sync_at": p.last_sync_at.isoformat() if p.last_sync_at else None,
                    "last_digest": p.last_digest.hex() if p.last_digest else None,
                    "in_sync": p.in_sync,
                }
                for p in products
            ],
        }
        json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return EXIT_OK
    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    console = Console(file=sys.stdout, highlight=False)
    tree = Tree(f"shared list: {len(accounts)} accounts")
    nodes: dict[str, Tree] = {}
    for a in accounts:
        status = "active" if a.active else "[dim]inactive[/dim]"
        if a.archived:
            status += " (archived)"
        label = (
            f"{escape(a.name)} [cyan]\\[{escape(a.code)}][/cyan]  {status}"
            f"  password: {'yes' if a.password_enabled else 'no'}"
        )
        parent = nodes.get(a.parent_code, tree)
        nodes[a.code] = parent.add(label)
    console.print(tree)
    for p in products:
        when = p.last_sync_at.isoformat() if p.last_sync_at else "never"
        state = "in sync" if p.in_sync else "out of sync"
        console.print(
            f"product {escape(p.serial)} ({escape(p.model)}): attached with {p.choice}, "
            f"last sync {when}, {state}"
        )
    return EXIT_OK


def _add_list(sub: Any) -> None:
    p = sub.add_parser("list", help="show the shared list as a tree (passwords shown as yes/no)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_list)


# --------------------------------------------------------------------------- attach


def _cmd_attach(args: argparse.Namespace) -> int:
    sources = [s for s in (src.make(args) for src in ATTACH_SOURCES) if s is not None]
    if len(sources) != 1:
        raise BadInput("attach needs exactly one meter source (e.g. --from-file FILE)")
    with open_store(args) as store:
        try:
            result = attach(
                store,
                sources[0],
                Choice(args.choice),
                backup=args.backup,
                preview=args.preview,
                policy=_policy(args),
                preview_format=Format(args.format),
            )
        except AttachError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)
            print(str(exc), file=sys.stderr)
            return EXIT_BAD_INPUT
    if result.backup is not None:
        print(f"{result.backup}: backup of {result.model} {result.serial}'s list saved")
    _print_list("added", [_account_label(a) for a in result.added])
    _print_list("updated", [_change_label(c) for c in result.updated])
    dup = f"{len(result.duplicates)} duplicate(s) not added"
    counts = f"{len(result.added)} added, {len(result.updated)} updated, {dup}"
    if result.previewed:
        print(f"{args.preview}: preview written ({counts}); nothing changed")
        return EXIT_OK
    print(f"attached {result.model} {result.serial} with {result.choice.value}: {counts}")
    source = sources[0]
    if not hasattr(source, "target"):
        print("the meter takes the shared list at its next sync")
        return EXIT_OK
    from agent.sync import LineProgress, run_fleet

    with open_store(args) as store:  # the shared list now replaces the meter's list
        (synced,) = run_fleet(store, [source.target], LineProgress())
    return synced.exit_code


def _add_attach(sub: Any) -> None:
    p = sub.add_parser("attach", help="attach a meter to the shared list")
    group = p.add_mutually_exclusive_group(required=True)
    for source in ATTACH_SOURCES:
        source.add_arguments(group)
    p.add_argument(
        "--choice",
        required=True,
        choices=[c.value for c in Choice],
        help="add-update: add the meter's accounts and update Status/Password of duplicates; "
        "add-keep: add only new accounts; discard: add nothing",
    )
    p.add_argument("--backup", metavar="FILE", help="save the meter's list (with counters) first")
    p.add_argument(
        "--supervisor-password",
        metavar="PW",
        help="with --port: the meter's supervisor password (default: $METER_SUPERVISOR_PASSWORD)",
    )
    p.add_argument("--baud", type=int, default=115200, help="with --port: line speed")
    p.add_argument(
        "--preview", metavar="FILE", help="export what the shared list would become; change nothing"
    )
    _format_arg(p)
    _add_policy_args(p)
    p.set_defaults(func=_cmd_attach)


# --------------------------------------------------------------------------- main

BUILTIN_COMMANDS: list[Callable[[Any], None]] = [
    _add_import,
    _add_export,
    _add_template,
    _add_list,
    _add_attach,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meter-sync", description="Keep meters in step with a shared cost-account list."
    )
    parser.add_argument(
        "--db",
        metavar="FILE",
        help="the shared-list database (default: $METERLINK_DB, "
        "else shared-list.db in the user data directory)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in BUILTIN_COMMANDS:
        add(sub)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result: int = args.func(args)
    except BadInput as exc:
        print(f"meter-sync: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (StoreError, OSError) as exc:
        print(f"meter-sync: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return result


if __name__ == "__main__":
    raise SystemExit(main())
