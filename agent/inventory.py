"""The fleet inventory: which meters to reach, and how (a TOML file).

::

    # meters.toml
    [[meter]]
    name = "mailroom"                       # a label for progress lines and reports
    port = "/dev/ttyUSB0"                   # any pyserial URL: /dev/pts/7, socket://host:4001, rfc2217://...
    baud = 9600                             # optional (default 115200)
    supervisor_password_env = "MAILROOM_PW" # optional: read the password from this variable

    [[meter]]
    name = "reception"
    port = "socket://127.0.0.1:4001"

Passwords are never written in the inventory itself: ``supervisor_password_env``
names an environment variable; otherwise ``--supervisor-password`` /
``$METER_SUPERVISOR_PASSWORD`` applies to every meter.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class InventoryError(ValueError):
    """The inventory file is unreadable or names a field wrongly (file, meter, field)."""


@dataclass(frozen=True)
class MeterTarget:
    """One meter to reach."""

    port: str
    name: str = ""
    baud: int = 115200
    supervisor_password: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.name or self.port


def load_inventory(
    path: str | os.PathLike[str], default_password: str | None = None
) -> list[MeterTarget]:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InventoryError(f"{p}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{p}: not valid TOML: {exc}") from None
    meters = data.get("meter")
    if not isinstance(meters, list) or not meters:
        raise InventoryError(f"{p}: no [[meter]] entries")
    targets: list[MeterTarget] = []
    allowed = {"name", "port", "baud", "supervisor_password_env"}
    for i, entry in enumerate(meters, 1):
        where = f"{p}: meter #{i}"
        if not isinstance(entry, dict):
            raise InventoryError(f"{where}: must be a table")
        unknown = set(entry) - allowed
        if unknown:
            raise InventoryError(
                f"{where}: unknown field {sorted(unknown)[0]!r} (allowed: {sorted(allowed)})"
            )
        port = entry.get("port")
        if not isinstance(port, str) or not port:
            raise InventoryError(f"{where}: field 'port' is required (a device path or URL)")
        baud = entry.get("baud", 115200)
        if not isinstance(baud, int) or baud <= 0:
            raise InventoryError(f"{where}: field 'baud' must be a positive integer")
        password = default_password
        env = entry.get("supervisor_password_env")
        if env is not None:
            if not isinstance(env, str) or env not in os.environ:
                raise InventoryError(
                    f"{where}: field 'supervisor_password_env': variable {env!r} is not set"
                )
            password = os.environ[env]
        targets.append(
            MeterTarget(
                port=port, name=str(entry.get("name", "")), baud=baud, supervisor_password=password
            )
        )
    return targets
