"""Realistic PitneyShip shared lists for the benchmarks (deterministic, seeded).

Three levels: divisions > departments > cost centres.  Only the lowest level is
chargeable, so ``chargeable`` accounts need ``divisions * departments`` parents on
top.  Codes look like an ERP's cost-centre codes (``D07``, ``D0714``,
``D07140031``); names are drawn from word lists and some are longer than the
meter's 32/16 limits so that the agent's shortening is exercised too.
"""

from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass

from agent.csvio import PITNEYSHIP_COLUMNS

HEADER = list(PITNEYSHIP_COLUMNS)  # the importer owns the column list

_DIVISIONS = [
    "Finance",
    "Human Resources",
    "Research and Development",
    "Manufacturing",
    "Sales",
    "Marketing",
    "Legal",
    "Facilities",
    "Information Technology",
    "Customer Service",
    "Logistics",
    "Procurement",
    "Quality Assurance",
    "Engineering",
    "Executive Office",
    "Corporate Communications",
    "Public Relations",
    "Product Management",
    "Compliance",
    "Internal Audit",
    "Treasury",
    "Investor Relations",
    "Security",
    "Training",
    "Field Operations",
    "Warehouse",
    "Shipping and Receiving",
    "Medical Affairs",
    "Regulatory Affairs",
    "Business Development",
]
_PLACES = [
    "Boston",
    "Chicago",
    "Denver",
    "Atlanta",
    "Seattle",
    "Phoenix",
    "Dallas",
    "Austin",
    "Portland",
    "Detroit",
    "Miami",
    "Houston",
    "Omaha",
    "Tulsa",
    "Reno",
    "Albany",
]
_DEPT = [
    "Payroll",
    "Accounts",
    "Billing",
    "Recruiting",
    "Benefits",
    "Labs",
    "Testing",
    "Assembly",
    "Outreach",
    "Contracts",
    "Support",
    "Planning",
    "Design",
    "Audit",
    "Tax",
    "Claims",
    "Records",
    "Events",
    "Print Shop",
    "Mailroom",
]
_WORDS = [
    "North",
    "South",
    "East",
    "West",
    "Central",
    "Annex",
    "Tower",
    "Plant",
    "Depot",
    "Office",
    "Desk",
    "Team",
    "Unit",
    "Cell",
    "Pod",
    "Wing",
    "Floor",
    "Lab",
    "Studio",
    "Branch",
    "Hub",
    "Yard",
    "Dock",
    "Store",
]


@dataclass(frozen=True)
class ListShape:
    chargeable: int
    divisions: int
    departments: int  # per division

    @property
    def per_department(self) -> int:
        return math.ceil(self.chargeable / (self.divisions * self.departments))


def shape_for(chargeable: int) -> ListShape:
    """A three-level shape with about ``chargeable`` lowest-level accounts."""
    divisions = max(1, min(30, round(chargeable ** (1 / 3))))
    departments = max(1, min(20, round((chargeable / divisions) ** 0.5)))
    return ListShape(chargeable, divisions, departments)


@dataclass(frozen=True)
class Row:
    name: str
    code: str
    active: bool
    password: str
    parent: str
    grandparent: str

    def cells(self) -> list[str]:
        pw = bool(self.password)
        return [
            self.name,
            self.code,
            "TRUE" if self.active else "FALSE",
            "",
            "TRUE" if pw else "FALSE",
            self.password,
            self.parent,
            self.grandparent,
            "TRUE",
            "",
            "",
            "",
            "FALSE",
        ]


def generate(chargeable: int, seed: int = 6) -> list[Row]:
    """Rows in file order (parents first) with exactly ``chargeable`` leaves."""
    rng = random.Random(seed)
    shape = shape_for(chargeable)
    rows: list[Row] = []
    leaves = 0
    div_names = list(_DIVISIONS)
    for d in range(shape.divisions):
        if leaves >= chargeable:
            break
        base = div_names[d % len(div_names)]
        dname = base if d < len(div_names) else f"{base} {d // len(div_names) + 1}"
        if rng.random() < 0.3:
            dname = f"{dname} {rng.choice(_PLACES)}"  # some exceed 32 and get shortened
        dcode = f"D{d + 1:02d}"
        rows.append(Row(dname, dcode, True, "", "", ""))
        for s in range(shape.departments):
            if leaves >= chargeable:
                break
            sname = f"{_DEPT[s % len(_DEPT)]} {rng.choice(_PLACES)}"
            if s >= len(_DEPT):
                sname = f"{sname} {s}"
            scode = f"{dcode}{s + 1:02d}"
            rows.append(Row(sname, scode, True, "", dname, ""))
            used: set[str] = set()
            for k in range(shape.per_department):
                if leaves >= chargeable:
                    break
                while True:
                    lname = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {k + 1}"
                    if lname not in used:
                        used.add(lname)
                        break
                password = f"{rng.randrange(10000):04d}" if rng.random() < 0.2 else ""
                rows.append(Row(lname, f"{scode}{k + 1:04d}", True, password, sname, dname))
                leaves += 1
    return rows


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(HEADER)
    for r in rows:
        w.writerow(r.cells())
    return buf.getvalue()


def flat_rows(n: int, seed: int = 7) -> list[Row]:
    """``n`` rows for the import benchmark: 3 levels, mostly leaves, unique names."""
    rng = random.Random(seed)
    rows: list[Row] = []
    per_sub = 100
    subs_per_top = 10
    top = sub = 0
    count = 0
    while count < n:
        tname = f"Division {top + 1:04d}"
        tcode = f"T{top + 1:04d}"
        rows.append(Row(tname, tcode, True, "", "", ""))
        count += 1
        for s in range(subs_per_top):
            if count >= n:
                break
            sname = f"Dept {s + 1:02d}"
            scode = f"{tcode}{s + 1:02d}"
            rows.append(Row(sname, scode, True, "", tname, ""))
            count += 1
            sub += 1
            for k in range(per_sub):
                if count >= n:
                    break
                password = f"{rng.randrange(10000):04d}" if rng.random() < 0.2 else ""
                rows.append(
                    Row(f"Centre {k + 1:03d}", f"{scode}{k + 1:03d}", True, password, sname, tname)
                )
                count += 1
        top += 1
    return rows
