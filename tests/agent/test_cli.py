"""`meter-sync` through main(argv)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from agent.attach import write_backup
from agent.cli import main
from agent.store import SharedList
from protocol.records import AccountRecord

from .helpers import ps, top, write

EXAMPLE = Path(__file__).parents[2] / "examples" / "shared-list.csv"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_import_list_export_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "l.db")
    code, out, _ = run(capsys, "--db", db, "import", str(EXAMPLE))
    assert code == 0 and "40 added" in out
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    code, out, _ = run(capsys, "--db", db, "list")
    assert code == 0
    assert "Rocket Sled Prototypes [2130]" in out and "password: yes" in out
    assert "R0ck" not in out
    code, out, _ = run(capsys, "--db", db, "list", "--json")
    doc = json.loads(out)
    assert len(doc["accounts"]) == 40
    assert all(set(a) >= {"code", "name", "password"} for a in doc["accounts"])
    assert "R0ck" not in out and "p4Y!" not in out
    exported = tmp_path / "out.csv"
    assert run(capsys, "--db", db, "export", str(exported), "--format", "cost-accounting")[0] == 0
    assert stat.S_IMODE(os.stat(exported).st_mode) == 0o600
    code, out, _ = run(capsys, "--db", db, "import", str(exported))
    assert code == 0 and "0 added, 0 changed, 0 deactivated, 40 unchanged" in out
    template = tmp_path / "t.csv"
    assert run(capsys, "template", str(template))[0] == 0
    assert template.read_text().startswith("Name,Code,Status,Description,PasswordEnabled")


def test_bad_file_exit_2_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "l.db"
    bad = write(tmp_path / "bad.csv", ps(top("Good"), top("R&D"), {"Name": "X", "Status": "y"}))
    code, _, err = run(capsys, "--db", str(db), "import", str(bad))
    assert code == 2
    assert f"{bad}:3: Name: " in err and "[chars-cost-accounting]" in err
    assert f"{bad}:4: Status: " in err and "[status-uppercase-bool]" in err
    assert err.strip().endswith("2 errors; nothing imported")
    with SharedList.open(db) as store:
        assert store.accounts() == []


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "l.db"
    code, out, _ = run(capsys, "--db", str(db), "import", "--dry-run", str(EXAMPLE))
    assert code == 0 and "40 added" in out and "dry run" in out
    with SharedList.open(db) as store:
        assert store.accounts() == [] and store.history() == []


def test_env_var_names_the_db(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "env.db"
    monkeypatch.setenv("METERLINK_DB", str(db))
    assert run(capsys, "import", str(EXAMPLE))[0] == 0
    with SharedList.open(db) as store:
        assert len(store.accounts()) == 40


def test_replace_mode_and_policy_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "l.db")
    run(capsys, "--db", db, "import", str(EXAMPLE))
    small = write(tmp_path / "s.csv", ps(top("Back\\Office", "BO")))
    code, out, _ = run(capsys, "--db", db, "import", "--dry-run", str(small))
    assert code == 0 and "1 added" in out  # \ is not in the service's forbidden set
    code, out, _ = run(
        capsys, "--db", db, "import", "--mode", "replace", "--policy", "standalone", str(small)
    )
    assert code == 0 and "1 added" in out and "deactivated" in out
    hyphen = write(tmp_path / "h.csv", ps(top("East-West", "EW")))
    code, _, err = run(capsys, "--db", db, "import", "--policy", "standalone", str(hyphen))
    assert code == 2 and "[no-hyphen-with-hierarchy]" in err
    code, _, _ = run(
        capsys, "--db", db, "import", "--policy", "standalone", "--no-hierarchy-display",
        str(hyphen),
    )
    assert code == 0


def test_attach_from_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "l.db")
    run(capsys, "--db", db, "import", str(EXAMPLE))
    meter = tmp_path / "meter.json"
    write_backup(meter, "0401234", "DM800i", [
        AccountRecord(code="9000", name="Meter Only", password_enabled=True, password="m3tr"),
        AccountRecord(code="5000", name="Finance", active=False),
    ])
    preview = tmp_path / "preview.csv"
    backup = tmp_path / "backup.json"
    code, out, _ = run(capsys, "--db", db, "attach", "--from-file", str(meter), "--choice",
                       "add-update", "--preview", str(preview), "--backup", str(backup))
    assert code == 0 and "nothing changed" in out
    assert "Meter Only" in preview.read_text() and backup.exists()
    code, out, _ = run(capsys, "--db", db, "attach", "--from-file", str(meter), "--choice",
                       "add-update")
    assert code == 0 and "1 added, 1 updated" in out and "m3tr" not in out
    code, out, _ = run(capsys, "--db", db, "list", "--json")
    products = json.loads(out)["products"]
    assert [(p["serial"], p["in_sync"]) for p in products] == [("0401234", False)]


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys)[0] == 2
    with pytest.raises(SystemExit) as info:
        main(["import"])
    assert info.value.code == 2
    code, _, err = run(capsys, "--db", str(tmp_path / "l.db"), "import", str(tmp_path / "no.csv"))
    assert code == 2 and "no.csv" in err
    code, _, err = run(capsys, "--db", str(tmp_path / "l.db"), "attach", "--from-file",
                       str(tmp_path / "no.json"), "--choice", "discard")
    assert code == 2 and "no.json" in err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 4096)
    code, _, err = run(capsys, "--db", str(junk), "list")
    assert code == 1 and "meter-sync:" in err
