"""The import rules: ONE table of named rules.

Every problem the agent reports about a shared-list file (or a meter list being
merged in) names one of these rules, e.g. ``[name-max-75]``.  Field rules carry
a ``check`` and the field *kinds* they apply to; header and structure rules are
enforced by :mod:`agent.csvio` and :mod:`agent.attach` and are listed here so
that every rule has one name and one meaning (docs/CSV.md is generated from the
same words).

The character policy (DOMAIN item 17) depends on whether the company uses the
Cost Accounting service (``--policy cost-accounting``, the default) or not
(``--policy standalone``, with or without hierarchy display).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class PolicyKind(StrEnum):
    COST_ACCOUNTING = "cost-accounting"
    STANDALONE = "standalone"


@dataclass(frozen=True, slots=True)
class Policy:
    """Which character rules apply."""

    kind: PolicyKind = PolicyKind.COST_ACCOUNTING
    hierarchy_display: bool = True  # standalone only: "Show Cost Account Hierarchy"


Check = Callable[[str, Policy], "str | None"]

BOTH = frozenset(PolicyKind)
CA_ONLY = frozenset({PolicyKind.COST_ACCOUNTING})
STANDALONE_ONLY = frozenset({PolicyKind.STANDALONE})

#: Characters refused in names and codes with the Cost Accounting service (seed 001).
COST_ACCOUNTING_FORBIDDEN = frozenset("-~`'^&|{}[]\";<>=öáíóéñ—–")

TRUE_FALSE = ("TRUE", "FALSE")
YES_NO = ("Y", "N")
ACCESS_LEVELS = ("E", "D", "L")


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    meaning: str
    kinds: frozenset[str] = frozenset()  # field kinds checked value by value
    check: Check | None = None
    policies: frozenset[PolicyKind] = BOTH


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem at one place: ``FILE:LINE: COLUMN: message [rule]``."""

    line: int
    column: str
    message: str
    rule: str

    def format(self, source: str) -> str:
        return f"{source}:{self.line}: {self.column}: {self.message} [{self.rule}]"


# --------------------------------------------------------------------------- checks
# A check gets a non-empty value (emptiness is the business of the *-required
# rules) and returns a message, or None when the value is fine.  Messages never
# contain password values.


def _max_len(limit: int) -> Check:
    def check(value: str, policy: Policy) -> str | None:
        if len(value) > limit:
            return f"{len(value)} characters; at most {limit} allowed"
        return None

    return check


def _max_bytes(value: str, policy: Policy) -> str | None:
    size = len(value.encode("utf-8"))
    return f"{size} bytes in UTF-8; at most 255 allowed" if size > 255 else None


def _exactly_4(value: str, policy: Policy) -> str | None:
    return None if len(value) == 4 else "must be exactly 4 characters"


def _one_of(allowed: tuple[str, ...], what: str) -> Check:
    def check(value: str, policy: Policy) -> str | None:
        if value in allowed:
            return None
        return f"{value!r} is not {what}"

    return check


def _forbidden(value: str, policy: Policy) -> str | None:
    bad = sorted({c for c in value if c in COST_ACCOUNTING_FORBIDDEN})
    if bad:
        return f"{value!r} contains {' '.join(bad)} (not allowed with the Cost Accounting service)"
    return None


def _double_space(value: str, policy: Policy) -> str | None:
    return f"{value!r} contains a double space" if "  " in value else None


def _leading_space(value: str, policy: Policy) -> str | None:
    return f"{value!r} starts with a space" if value[:1].isspace() else None


def _trailing_space(value: str, policy: Policy) -> str | None:
    return f"{value!r} ends with a space" if value[-1:].isspace() else None


def _ascii(value: str, policy: Policy) -> str | None:
    bad = sorted({c for c in value if ord(c) > 127 and c not in COST_ACCOUNTING_FORBIDDEN})
    if bad:
        return f"{value!r} contains non-ASCII {' '.join(bad)}"
    return None


def _no_at(value: str, policy: Policy) -> str | None:
    return f"{value!r} contains @ (may be typed by hand, not imported)" if "@" in value else None


def _no_hyphen(value: str, policy: Policy) -> str | None:
    if policy.hierarchy_display and "-" in value:
        return f"{value!r} contains - (not allowed while hierarchy display is on)"
    return None


def _no_control(value: str, policy: Policy) -> str | None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a control character (tab, line break, ...)"
    return None


LABEL = frozenset({"name", "code"})

#: THE table.  Order matters only for the order of messages about one value.
RULES: tuple[Rule, ...] = (
    # -- the file itself
    Rule("file-utf8", "The file is UTF-8 text (a byte-order mark is allowed)."),
    Rule(
        "header-format",
        "The first non-comment line is a PitneyShip header (has Name) or a Cost Accounting "
        "header (has AccountName).",
    ),
    Rule("header-required-column", "Required columns are present: Name and Status (PitneyShip), "
         "AccountName and Status (Cost Accounting)."),
    Rule("header-unknown-column", "Every non-empty header cell is a column of the detected "
         "format (catches misspelt columns)."),
    Rule("header-duplicate-column", "No column appears twice in the header."),
    Rule("row-extra-cells", "A row has no non-empty cells beyond the header's columns."),
    # -- one value at a time
    Rule("name-required", "Every row names its account (Name; AccountName for Cost Accounting)."),
    Rule("name-max-75", "A name has at most 75 characters.", frozenset({"name"}), _max_len(75)),
    Rule("code-max-75", "A code has at most 75 characters.", frozenset({"code"}), _max_len(75)),
    Rule(
        "code-max-255-bytes",
        "A code has at most 255 bytes in UTF-8 (the list digest's limit; only reachable with "
        "non-ASCII codes in the standalone policy).",
        frozenset({"code"}),
        _max_bytes,
    ),
    Rule("no-control-chars", "Names and codes contain no tab, line break or other control "
         "character.", LABEL, _no_control),
    Rule("no-trailing-space", "Names and codes do not end with a space (invisible, and it "
         "would make 'Sales' and 'Sales ' different accounts).", LABEL, _trailing_space),
    Rule(
        "chars-cost-accounting",
        "With the Cost Accounting service, names and codes contain none of "
        "- ~ ` ' ^ & | { } [ ] \" ; < > = ö á í ó é ñ — –.",
        LABEL,
        _forbidden,
        CA_ONLY,
    ),
    Rule("no-double-space", "With the Cost Accounting service, names and codes contain no "
         "double space.", LABEL, _double_space, CA_ONLY),
    Rule("no-leading-space", "With the Cost Accounting service, names and codes do not start "
         "with a space.", LABEL, _leading_space, CA_ONLY),
    Rule("ascii-only", "With the Cost Accounting service, names and codes are ASCII.",
         LABEL, _ascii, CA_ONLY),
    Rule("no-at-on-import", "With the Cost Accounting service, @ may not be imported in names "
         "or codes (it may be typed by hand later).", LABEL, _no_at, CA_ONLY),
    Rule(
        "no-hyphen-with-hierarchy",
        "Without the service (standalone policy) and with hierarchy display on, names and codes "
        "contain no -.  (\\ is allowed on import in the standalone policy.)",
        LABEL,
        _no_hyphen,
        STANDALONE_ONLY,
    ),
    Rule("description-max-150", "A description has at most 150 characters (any characters).",
         frozenset({"description"}), _max_len(150)),
    Rule("password-exactly-4", "A password (PasswordCode, Password) is exactly 4 characters.",
         frozenset({"password"}), _exactly_4),
    Rule(
        "password-required-when-enabled",
        "PasswordEnabled=TRUE needs a PasswordCode, unless the account already has a password "
        "in the shared list (then the stored one is kept).",
    ),
    Rule("password-needs-enabled", "A PasswordCode is given only when PasswordEnabled is TRUE "
         "(a password on an unprotected account is refused as ambiguous)."),
    Rule("status-required", "Status is given on every row."),
    Rule("status-uppercase-bool", "Status is TRUE or FALSE, in uppercase.",
         frozenset({"status"}), _one_of(TRUE_FALSE, "TRUE or FALSE (uppercase)")),
    Rule("bool-uppercase", "PasswordEnabled, Billable and Archive are TRUE, FALSE or empty, "
         "in uppercase.", frozenset({"bool"}), _one_of(TRUE_FALSE, "TRUE or FALSE (uppercase)")),
    Rule("yn-flag", "Cost Accounting Status and Delete are Y or N (uppercase).",
         frozenset({"yn"}), _one_of(YES_NO, "Y or N (uppercase)")),
    Rule("access-level-values", "AccessLevel is E, D or L (uppercase) or empty.",
         frozenset({"access-level"}), _one_of(ACCESS_LEVELS, "E, D or L (uppercase)")),
    # -- the list as a whole
    Rule("code-unique", "No two accounts share a code (within the file, and a code that "
         "defaults to Name must not be another account's code)."),
    Rule("code-immutable", "A code cannot change after import: a row may not give an existing "
         "account (same name, same parent) a new code."),
    Rule("parent-immutable", "An account cannot move: a row for an existing code keeps its "
         "parent (meters do not move accounts; deactivate and add a new one)."),
    Rule("sibling-name-unique", "No two accounts with the same parent share a name."),
    Rule("max-depth-3", "Accounts nest at most three levels: account > sub > subsub."),
    Rule("parent-exists", "The parent a row names (ParentName, NextParentName, AccountName, "
         "SubAccountName) exists, in the file or already in the shared list."),
    Rule("parent-code-matches", "Cost Accounting format: a parent code given on a row "
         "(AccountCode, SubAccountCode) is the code of the parent the row's names designate."),
    Rule(
        "next-parent-consistent",
        "NextParentName is given only with ParentName, and ParentName names a top-level account "
        "unless NextParentName is given (SubSubAccountName likewise needs SubAccountName).",
    ),
    # -- attach
    Rule("meter-password-exactly-4", "Attach: a meter account's password merged into the "
         "shared list is exactly 4 characters (meters accept 4 or more; the list carries 4)."),
)

RULES_BY_NAME: dict[str, Rule] = {r.name: r for r in RULES}
assert len(RULES_BY_NAME) == len(RULES), "duplicate rule name"

_KIND_CACHE: dict[tuple[str, PolicyKind, bool], tuple[Rule, ...]] = {}


def rules_for(kind: str, policy: Policy) -> tuple[Rule, ...]:
    """The value rules that apply to a field of ``kind`` under ``policy``."""
    key = (kind, policy.kind, policy.hierarchy_display)
    found = _KIND_CACHE.get(key)
    if found is None:
        found = tuple(
            r for r in RULES if kind in r.kinds and policy.kind in r.policies and r.check
        )
        _KIND_CACHE[key] = found
    return found


# Fast path for the common case (a 100,000-row file checks 200,000 labels): a value
# made only of these characters, within the limits below, passes every value rule.
# tests/agent/test_rules.py checks that this never accepts what the table refuses.
_SAFE_CA = re.compile(r"[A-Za-z0-9 !#$%()*+,./:?_]+")
_SAFE_STANDALONE = re.compile(r"[A-Za-z0-9 !#$%()*+,./:?_@\\&'=;<>\[\]{}|^~`\"]+")
_FLAGS = {"status": TRUE_FALSE, "bool": TRUE_FALSE, "yn": YES_NO, "access-level": ACCESS_LEVELS}


def quick_ok(kind: str, value: str, policy: Policy) -> bool:
    """True when ``value`` certainly passes every value rule for ``kind`` (False: unsure)."""
    if kind in LABEL:
        if len(value) > 75 or value[-1] == " ":
            return False
        if policy.kind is PolicyKind.COST_ACCOUNTING:
            return (
                _SAFE_CA.fullmatch(value) is not None and value[0] != " " and "  " not in value
            )
        return _SAFE_STANDALONE.fullmatch(value) is not None
    if kind == "description":
        return len(value) <= 150
    if kind == "password":
        return len(value) == 4
    allowed = _FLAGS.get(kind)
    return allowed is not None and value in allowed


def check_value(
    kind: str, value: str, column: str, line: int, policy: Policy
) -> list[Issue]:
    """Run every value rule for ``kind`` over a non-empty ``value``."""
    if not value or quick_ok(kind, value, policy):
        return []
    out: list[Issue] = []
    for rule in rules_for(kind, policy):
        assert rule.check is not None
        message = rule.check(value, policy)
        if message is not None:
            out.append(Issue(line, column, message, rule.name))
    return out


def issue(line: int, column: str, rule: str, message: str) -> Issue:
    """An :class:`Issue` for a rule of the table (a typo in a rule name fails loudly)."""
    if rule not in RULES_BY_NAME:
        raise KeyError(f"unknown rule {rule!r}")
    return Issue(line, column, message, rule)
