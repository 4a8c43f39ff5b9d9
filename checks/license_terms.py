"""Reading license entries as their authors meant them, with license-expression's licensing data.

An entry is an SPDX expression whose terms may be written several ways. Each term is
resolved, in this order, to:

- an SPDX id (``agpl-3.0`` is AGPL-3.0-only, ``GPL-2.0+`` is GPL-2.0-or-later): the SPDX
  licensing of license-expression, its ids and their aliases;
- a ``LicenseRef-*`` that the SBOM itself defines: a known custom license, shown with its name;
- a license *name* such as ``GPLv3+``, ``Apache License 2.0`` or ``MIT License``: the name is
  reduced to key candidates by rules about how names are written (drop "License"/"Version",
  ``v3`` is version 3, a trailing ``+`` or "or later" is ``-or-later``) and a candidate counts
  only when license-expression's data knows it, as an SPDX id or alias or as a ScanCode
  license key (``gpl-3.0-plus`` → GPL-3.0-or-later). There is no table of names here;
- otherwise unknown: what happens then is ``policy.unknown_licenses``.

``judge`` then decides the whole expression: an OR needs one acceptable branch (and names
it), an AND needs all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from license_expression import (
    ExpressionError,
    LicenseSymbol,
    LicenseWithExceptionSymbol,
    Licensing,
    build_spdx_licensing,
    get_license_index,
)

_INDEX = get_license_index()
SPDX = build_spdx_licensing(_INDEX)  # what get_spdx_licensing() builds, from the same index
_SCANCODE = {
    str(e["license_key"]).lower(): e["spdx_license_key"]
    for e in _INDEX
    if e.get("spdx_license_key") and not e.get("is_exception")
}
_SKELETON = Licensing()  # parses the structure of an expression whose terms are placeholders
_OPERATOR = re.compile(r"(\(|\)|\s+(?:AND|OR|WITH)\s+(?!later\b|any\b))", re.I)
_PLUS = re.compile(r"\s*(\+|\bor[\s-]+(?:any\s+)?later(?:\s+version)?)\s*$", re.I)
_ONLY = re.compile(r"\s*\bonly\s*$", re.I)
_NOISE = re.compile(r"\b(?:licen[cs]ed?|version|ver)\b\.?", re.I)


@dataclass(frozen=True)
class Term:
    """One license as written (``text``) and what it was read as."""

    text: str
    key: str | None  # the id it stands for; None when unknown
    how: str  # spdx | name | sbom | unknown
    note: str = ""  # the custom license's name (sbom), or why it is unknown

    def shown(self) -> str:
        if self.how == "name":
            return f"{self.text} (read as {self.key})"
        if self.how == "sbom":
            return f"{self.text} “{self.note}”" if self.note and self.note != self.text else self.text
        return self.key or self.text


def _spdx_key(candidate: str) -> str | None:
    try:
        parsed = SPDX.parse(candidate)
    except ExpressionError:
        return None
    if isinstance(parsed, LicenseSymbol) and not SPDX.unknown_license_keys(parsed) and not parsed.is_exception:
        return str(parsed.key)
    return None


def _candidates(name: str) -> list[str]:
    text = re.sub(r"^\s*the\s+", "", name.strip(), flags=re.I)
    if not text or "::" in text or len(text) > 120:  # a trove classifier names a family, not a license
        return []
    plus, only = bool(_PLUS.search(text)), bool(_ONLY.search(text))
    text = _ONLY.sub("", _PLUS.sub("", text))
    text = _NOISE.sub(" ", text)
    text = re.sub(r"(?<=[A-Za-z])v(?=\d)", " ", text)  # GPLv3 is GPL 3
    text = re.sub(r"\bv(?=\d)", "", text, flags=re.I)  # GPL v3 is GPL 3
    words = re.findall(r"[A-Za-z0-9][A-Za-z0-9.]*", text)
    if not words:
        return []
    bases = ["-".join(words)]
    if any(w.isdigit() for w in words):  # "3" may stand for 3.0
        bases.append("-".join(f"{w}.0" if w.isdigit() else w for w in words))
    out: list[str] = []
    for base in bases:
        if plus:
            out += [f"{base}-or-later", f"{base}+", f"{base}-plus"]
        elif only:
            out += [f"{base}-only", base]
        else:
            out += [base, f"{base}-only"]
    return out


@lru_cache(maxsize=4096)
def by_name(name: str) -> str | None:
    """The license id license-expression's data gives a license name, if it knows one."""
    for candidate in _candidates(name):
        key = _spdx_key(candidate) or _SCANCODE.get(candidate.lower())
        if key:
            return key
    return None


def resolve(text: str, defined: Mapping[str, str] | None = None) -> Term:
    """What one license term stands for."""
    text = text.strip()
    defined = defined or {}
    if text in defined:
        return Term(text, text, "sbom", defined[text])
    key = _spdx_key(text)
    if key:
        return Term(text, key, "spdx")
    if text.startswith("LicenseRef-") or ":LicenseRef-" in text:
        return Term(text, None, "unknown", "a LicenseRef that the SBOM does not define")
    key = by_name(text)
    if key:
        return Term(text, key, "name")
    return Term(text, None, "unknown", "not an SPDX id, and not a license name license-expression knows")


@dataclass
class Verdict:
    """Whether an expression is acceptable, and what decided it."""

    ok: bool
    prohibited: set[str] = field(default_factory=set)  # prohibited ids no choice avoids
    unidentified: set[str] = field(default_factory=set)  # unknown terms no choice avoids (policy block)
    choices: list[dict[str, str]] = field(default_factory=list)  # {expression, allowed_by, refused}
    relies_on_unknown: bool = False  # acceptable only because unknown terms are let through


@dataclass(frozen=True)
class Reading:
    """A license entry read term by term; ``problem`` is set when it does not parse at all."""

    expression: str
    terms: tuple[Term, ...]
    tree: Any = None
    problem: str = ""

    def term(self, symbol: LicenseSymbol) -> Term:
        return self.terms[int(str(symbol.key)[1:])]

    def render(self, node: Any, *, top: bool = True, ids: bool = False) -> str:
        """The (sub)expression with each term shown as it was read (``ids``: only the id it was read as)."""
        if isinstance(node, LicenseWithExceptionSymbol):
            return f"{self.render(node.license_symbol, ids=ids)} WITH {self.term(node.exception_symbol).text}"
        if isinstance(node, LicenseSymbol):
            term = self.term(node)
            return (term.key or term.text) if ids else term.shown()
        op = " OR " if isinstance(node, _SKELETON.OR) else " AND "
        inner = op.join(self.render(a, top=False, ids=ids) for a in node.args)
        return inner if top else f"({inner})"


def read(expression: str, defined: Mapping[str, str] | None = None) -> Reading:
    """Split an entry into terms at its operators and parentheses and resolve each term."""
    return _read(expression, tuple(sorted((defined or {}).items())))


@lru_cache(maxsize=8192)  # an SBOM repeats the same few expressions many times
def _read(expression: str, defined_items: tuple[tuple[str, str], ...]) -> Reading:
    defined = dict(defined_items)
    parts = [p for p in _OPERATOR.split(expression) if p and p.strip()]
    terms: list[Term] = []
    skeleton: list[str] = []
    after_with = False
    for part in parts:
        word = part.strip()
        if word in ("(", ")") or word.upper() in ("AND", "OR", "WITH"):
            skeleton.append(word.upper())
            after_with = word.upper() == "WITH"
            continue
        # the exception after WITH is kept as written: it does not change which license applies
        terms.append(Term(word, word, "exception") if after_with else resolve(word, defined))
        skeleton.append(f"L{len(terms) - 1}")
        after_with = False
    try:
        tree = _SKELETON.parse(" ".join(skeleton)) if skeleton else None
    except ExpressionError as exc:
        return Reading(expression, tuple(terms), None, f"does not parse: {exc}")
    if tree is None:
        return Reading(expression, tuple(terms), None, "does not parse: empty expression")
    return Reading(expression, tuple(terms), tree)


def judge(reading: Reading, prohibited: frozenset[str], *, block_unknown: bool) -> Verdict:
    """Whether some choice among the OR branches avoids every prohibited (and, under
    ``block_unknown``, every unidentified) license; the choices made on the way are named."""
    if reading.tree is None:
        if block_unknown:
            return Verdict(False, unidentified={reading.expression})
        return Verdict(True, relies_on_unknown=True)

    def walk(node: Any) -> Verdict:
        if isinstance(node, _SKELETON.OR):
            options = [walk(a) for a in node.args]
            # a branch that needs no unidentified license is the better choice
            ranked = sorted(zip(node.args, options, strict=True), key=lambda pair: pair[1].relies_on_unknown)
            for arg, v in ranked:
                if v.ok:
                    refused = [reading.render(a) for a, o in zip(node.args, options, strict=True) if not o.ok]
                    choice = {
                        "expression": reading.render(node),
                        "allowed_by": reading.render(arg),
                        "refused": ", ".join(refused),
                    }
                    return Verdict(True, choices=[*v.choices, choice], relies_on_unknown=v.relies_on_unknown)
            return Verdict(
                False,
                set().union(*(v.prohibited for v in options)),
                set().union(*(v.unidentified for v in options)),
            )
        if isinstance(node, _SKELETON.AND):
            parts = [walk(a) for a in node.args]
            return Verdict(
                all(p.ok for p in parts),
                set().union(*(p.prohibited for p in parts)),
                set().union(*(p.unidentified for p in parts)),
                [c for p in parts for c in p.choices],
                any(p.relies_on_unknown for p in parts),
            )
        # "GPL-2.0-only WITH Classpath-exception-2.0" is still GPL-2.0-only
        term = reading.term(node.license_symbol if isinstance(node, LicenseWithExceptionSymbol) else node)
        if term.key is None:
            if block_unknown:
                return Verdict(False, unidentified={term.text})
            return Verdict(True, relies_on_unknown=True)
        if term.key in prohibited:
            return Verdict(False, {term.key})
        return Verdict(True)

    return walk(reading.tree)


def normalise(ids: list[str]) -> frozenset[str]:
    """Policy license ids as the keys ``resolve`` gives (``AGPL-3.0`` is AGPL-3.0-only)."""
    out: set[str] = set()
    for text in filter(str.strip, ids):
        reading = read(text)
        out.update(t.key or t.text for t in reading.terms if t.how != "exception")
    return frozenset(out)
