"""Where the agent keeps its files."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

ENV_DB = "METERLINK_DB"
DB_FILENAME = "shared-list.db"


def default_db_path() -> Path:
    """The shared-list database in the user's data directory."""
    return Path(platformdirs.user_data_dir("meterlink")) / DB_FILENAME


def resolve_db_path(cli_value: str | os.PathLike[str] | None = None) -> Path:
    """`--db FILE` wins, then $METERLINK_DB, then the user data directory."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get(ENV_DB)
    if env:
        return Path(env)
    return default_db_path()
