"""The GAQL subset the Google sandbox understands: parse `SELECT fields FROM resource
[WHERE a AND b ...] [LIMIT n]` and match a row against its WHERE conditions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf.message import Message

from services.sandbox.google_errors import invalid

_QUERY = re.compile(
    r"\s*SELECT\s+(?P<select>.+?)\s+FROM\s+(?P<resource>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*",
    re.IGNORECASE | re.DOTALL,
)
_LITERAL = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[\w.:+-]+"
_CONDITION = re.compile(
    r"\s*(?P<field>[\w.]+)\s*(?P<operator>!=|=|NOT\s+LIKE|LIKE|NOT\s+IN|IN|DURING|BETWEEN)\s*",
    re.IGNORECASE,
)
_LIST_OPERAND = re.compile(rf"\(\s*(?:{_LITERAL})(?:\s*,\s*(?:{_LITERAL}))*\s*\)")
_RANGE_OPERAND = re.compile(rf"(?P<low>{_LITERAL})\s+AND\s+(?P<high>{_LITERAL})", re.IGNORECASE)
_SINGLE_OPERAND = re.compile(_LITERAL)
_NEXT_CONDITION = re.compile(r"\s+AND\s+|\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Condition:
    """One `field OPERATOR operand` of a WHERE clause; `values` are unquoted literals."""

    field: str
    operator: str  # upper case, single-spaced: "=", "!=", "IN", "NOT LIKE", "DURING", ...
    values: tuple[str, ...]

    def matches(self, row: Message) -> bool:
        if self.field.startswith("segments."):
            # Date ranges select no rows here: every metric covers the object's lifetime.
            return True
        actual = _field_text(row, self.field)
        if self.operator in ("=", "!="):
            return (actual == self.values[0]) == (self.operator == "=")
        if self.operator in ("IN", "NOT IN"):
            return (actual in self.values) == (self.operator == "IN")
        if self.operator in ("LIKE", "NOT LIKE"):
            return bool(_like(self.values[0]).fullmatch(actual)) == (self.operator == "LIKE")
        raise invalid(
            "query_error.PROHIBITED_FIELD_IN_WHERE_CLAUSE",
            f"{self.operator} applies to segments.date only, not to {self.field}.",
        )


@dataclass(frozen=True)
class Query:
    """The parsed subset of GAQL: SELECT fields FROM resource [WHERE a AND b ...] [LIMIT n]."""

    fields: tuple[str, ...]
    resource: str
    conditions: tuple[Condition, ...] = ()
    limit: int | None = None

    @classmethod
    def parse(cls, text: str) -> Query:
        match = _QUERY.fullmatch(text)
        if match is None:
            raise invalid("query_error.UNEXPECTED_INPUT", f"Error in query: {text!r}.")
        return cls(
            fields=tuple(name.strip() for name in match["select"].split(",")),
            resource=match["resource"],
            conditions=_parse_where(match["where"] or ""),
            limit=int(match["limit"]) if match["limit"] else None,
        )


def _parse_where(text: str) -> tuple[Condition, ...]:
    conditions = []
    text = text.strip()
    position = 0
    while position < len(text):
        head = _CONDITION.match(text, position)
        if head is None:
            raise invalid(
                "query_error.UNEXPECTED_INPUT", f"Error in query near {text[position:]!r}."
            )
        operator = " ".join(head["operator"].upper().split())
        if operator == "BETWEEN":
            operand = _RANGE_OPERAND.match(text, head.end())
            values = [operand["low"], operand["high"]] if operand else []
        else:
            operand_pattern = _LIST_OPERAND if operator.endswith("IN") else _SINGLE_OPERAND
            operand = operand_pattern.match(text, head.end())
            values = re.findall(_LITERAL, operand[0]) if operand else []
        if operand is None:
            raise invalid("query_error.EXPECTED_SINGLE_VALUE", f"No operand after {head[0]!r}.")
        conditions.append(Condition(head["field"], operator, tuple(map(_unquote, values))))
        separator = _NEXT_CONDITION.match(text, operand.end())
        if separator is None:
            raise invalid("query_error.EXPECTED_AND", f"Expected AND after {operand[0]!r}.")
        position = separator.end()
    return tuple(conditions)


def _unquote(literal: str) -> str:
    if literal[:1] in ("'", '"'):
        return re.sub(r"\\(.)", r"\1", literal[1:-1])
    return literal


def _like(pattern: str) -> re.Pattern[str]:
    """GAQL LIKE: `%` any run, `_` any one character, `[x]` a literal x."""
    regex = ""
    for escaped, wildcard, text in re.findall(r"\[(.)\]|([%_])|(.)", pattern, re.DOTALL):
        if wildcard:
            regex += ".*" if wildcard == "%" else "."
        else:
            regex += re.escape(escaped or text)
    return re.compile(regex, re.DOTALL)


def _field_text(message: Message, path: str) -> str:
    """A scalar field as GAQL compares it: enums by name, everything else as text."""
    *parents, leaf = path.split(".")
    for part in parents:
        message = getattr(message, part)
    value = getattr(message, leaf)
    enum_type = message.DESCRIPTOR.fields_by_name[leaf].enum_type
    return enum_type.values_by_number[value].name if enum_type is not None else str(value)
