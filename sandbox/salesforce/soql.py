"""A SOQL subset: tokenizer, recursive-descent parser and syntax tree, plus Salesforce's error texts.

Supported grammar (keywords case-insensitive)::

    query      := SELECT (COUNT '(' ')' | field (',' field)*) FROM ident
                  [WHERE cond] [ORDER BY order (',' order)*] [LIMIT int] [OFFSET int]
    order      := field [ASC | DESC] [NULLS (FIRST | LAST)]
    cond       := and (OR and)*
    and        := unary (AND unary)*
    unary      := NOT unary | '(' cond ')' | predicate
    predicate  := field op literal | field [NOT] IN '(' literal (',' literal)* ')'
                  | field LIKE string
    op         := '=' | '!=' | '<>' | '<' | '<=' | '>' | '>='
    literal    := string | number | TRUE | FALSE | NULL | datetime | date

SOQL reference: https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select.htm

Errors are :class:`SoqlError` carrying the Salesforce ``errorCode`` and the message in the layout
Salesforce uses for SOQL errors (the query line, a caret under the offending token, ``ERROR at
Row:R:Column:C``, then the reason) — see the recorded INVALID_FIELD / MALFORMED_QUERY bodies in
``/work/shared/vendor-fixtures/salesforce``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeAlias

__all__ = [
    "And",
    "Cmp",
    "DateLiteral",
    "DateTimeLiteral",
    "Expr",
    "FieldRef",
    "In",
    "Like",
    "Literal",
    "Not",
    "Or",
    "OrderItem",
    "Query",
    "SoqlError",
    "parse",
    "quote_string",
    "soql_error_message",
    "tokenize",
]


class SoqlError(Exception):
    """A query Salesforce would reject: ``code`` is its errorCode, ``message`` its message text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def soql_error_message(soql: str, pos: int, reason: str) -> str:
    """Salesforce's SOQL error layout: the offending line, a caret under ``pos``, row/column, reason.

    Row and column are 1-based (the recorded INVALID_FIELD fixture puts ``SetupOwnerId`` at
    character index 7 as ``Column:8`` with seven spaces before the caret).
    """
    pos = max(0, min(pos, len(soql)))
    line_start = soql.rfind("\n", 0, pos) + 1
    line_end = soql.find("\n", pos)
    line = soql[line_start : line_end if line_end != -1 else len(soql)]
    row = soql.count("\n", 0, pos) + 1
    col = pos - line_start + 1
    return f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n{reason}"


# -- tokens -------------------------------------------------------------------------------------


class Tok(Enum):
    IDENT = "ident"
    STRING = "string"
    NUMBER = "number"
    DATETIME = "datetime"
    DATE = "date"
    OP = "op"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    EOF = "eof"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Tok
    text: str  # source text (for IDENT/OP/NUMBER/DATE*), decoded value for STRING
    pos: int
    like: str = ""  # STRING only: the value as an SQL LIKE pattern with '\' as escape character


# Escapes allowed in quoted strings; \_ and \% only mean something inside LIKE patterns.
# https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm
_ESCAPES = {
    "n": "\n",
    "N": "\n",
    "r": "\r",
    "R": "\r",
    "t": "\t",
    "T": "\t",
    "b": "\b",
    "B": "\b",
    "f": "\f",
    "F": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
}
_OPS = ("<=", ">=", "!=", "<>", "=", "<", ">")


def _malformed(soql: str, pos: int, reason: str) -> SoqlError:
    return SoqlError("MALFORMED_QUERY", soql_error_message(soql, pos, reason))


def _is_ident_start(ch: str) -> bool:
    return ch.isascii() and (ch.isalpha() or ch == "_")


def _is_ident_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch in "_.")


def _scan_datetime(soql: str, i: int) -> tuple[Tok, int] | None:
    """A date (YYYY-MM-DD) or dateTime literal starting at ``i``; None if there is none."""
    n = len(soql)
    j = i
    if not (j + 10 <= n and soql[j : j + 4].isdigit() and soql[j + 4] == "-" and soql[j + 7] == "-"):
        return None
    if not (soql[j + 5 : j + 7].isdigit() and soql[j + 8 : j + 10].isdigit()):
        return None
    j += 10
    if j < n and soql[j] == "T":
        # dateTime: hh:mm:ss[.sss](Z|(+|-)hh:mm|(+|-)hhmm)
        k = j + 1
        while k < n and (soql[k].isdigit() or soql[k] in ":."):
            k += 1
        if k < n and soql[k] == "Z":
            k += 1
        elif k < n and soql[k] in "+-":
            k += 1
            while k < n and (soql[k].isdigit() or soql[k] == ":"):
                k += 1
        else:
            return None
        return Tok.DATETIME, k
    return Tok.DATE, j


def tokenize(soql: str) -> list[Token]:
    """Split ``soql`` into tokens; a bad character or string escape is MALFORMED_QUERY."""
    out: list[Token] = []
    i, n = 0, len(soql)
    while i < n:
        ch = soql[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "'":
            value: list[str] = []
            like: list[str] = []
            j = i + 1
            while True:
                if j >= n:
                    raise _malformed(soql, i, "unexpected token: <EOF>")
                c = soql[j]
                if c == "'":
                    j += 1
                    break
                if c == "\\":
                    if j + 1 >= n:
                        raise _malformed(soql, i, "unexpected token: <EOF>")
                    e = soql[j + 1]
                    if e in _ESCAPES:
                        value.append(_ESCAPES[e])
                        like.append("\\\\" if e == "\\" else _ESCAPES[e])
                    elif e in "%_":
                        value.append("\\" + e)
                        like.append("\\" + e)
                    else:
                        raise _malformed(
                            soql,
                            j,
                            f"Illegal character sequence '\\{e}' in string literal.",
                        )
                    j += 2
                    continue
                value.append(c)
                like.append(c)
                j += 1
            out.append(Token(Tok.STRING, "".join(value), i, "".join(like)))
            i = j
            continue
        if ch.isdigit() or (ch in "+-" and i + 1 < n and soql[i + 1].isdigit() and _number_allowed(out)):
            scanned = _scan_datetime(soql, i) if ch.isdigit() else None
            if scanned is not None:
                kind, j = scanned
                out.append(Token(kind, soql[i:j], i))
                i = j
                continue
            j = i + 1
            while j < n and (soql[j].isdigit() or soql[j] == "."):
                j += 1
            out.append(Token(Tok.NUMBER, soql[i:j], i))
            i = j
            continue
        if _is_ident_start(ch):
            j = i + 1
            while j < n and _is_ident_char(soql[j]):
                j += 1
            out.append(Token(Tok.IDENT, soql[i:j], i))
            i = j
            continue
        if ch == "(":
            out.append(Token(Tok.LPAREN, ch, i))
            i += 1
            continue
        if ch == ")":
            out.append(Token(Tok.RPAREN, ch, i))
            i += 1
            continue
        if ch == ",":
            out.append(Token(Tok.COMMA, ch, i))
            i += 1
            continue
        op = next((o for o in _OPS if soql.startswith(o, i)), None)
        if op is not None:
            out.append(Token(Tok.OP, op, i))
            i += len(op)
            continue
        raise _malformed(soql, i, f"unexpected token: '{ch}'")
    out.append(Token(Tok.EOF, "", n))
    return out


def _number_allowed(prev: list[Token]) -> bool:
    """A sign starts a number only where a literal may follow (after an operator, '(' or ',')."""
    return bool(prev) and prev[-1].kind in (Tok.OP, Tok.LPAREN, Tok.COMMA)


def quote_string(value: str) -> str:
    """``value`` as a SOQL string literal (``parse`` of it yields ``value`` back)."""
    out = ["'"]
    for c in value:
        if c == "\\":
            out.append("\\\\")
        elif c == "'":
            out.append("\\'")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c == "\b":
            out.append("\\b")
        elif c == "\f":
            out.append("\\f")
        else:
            out.append(c)
    out.append("'")
    return "".join(out)


# -- syntax tree --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DateTimeLiteral:
    """A dateTime literal, as epoch milliseconds (UTC)."""

    ms: int
    text: str


@dataclass(frozen=True, slots=True)
class DateLiteral:
    text: str  # YYYY-MM-DD


Literal: TypeAlias = str | int | float | bool | DateTimeLiteral | DateLiteral | None


@dataclass(frozen=True, slots=True)
class FieldRef:
    name: str  # as written in the query
    pos: int


@dataclass(frozen=True, slots=True)
class Cmp:
    field: FieldRef
    op: str  # = != < <= > >=  ('<>' normalised to '!=')
    value: Literal
    value_pos: int


@dataclass(frozen=True, slots=True)
class In:
    field: FieldRef
    values: tuple[Literal, ...]
    negate: bool


@dataclass(frozen=True, slots=True)
class Like:
    field: FieldRef
    pattern: str  # SQL LIKE pattern, '\' escapes


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr


Expr: TypeAlias = Cmp | In | Like | And | Or | Not


@dataclass(frozen=True, slots=True)
class OrderItem:
    field: FieldRef
    descending: bool
    nulls_last: bool


@dataclass(frozen=True)
class Query:
    """A parsed SOQL query. ``count`` is ``SELECT COUNT()``; ``fields`` is then empty."""

    soql: str
    fields: tuple[FieldRef, ...]
    count: bool
    sobject: str
    sobject_pos: int
    where: Expr | None = None
    order_by: tuple[OrderItem, ...] = field(default_factory=tuple)
    limit: int | None = None
    offset: int | None = None


# -- parser -------------------------------------------------------------------------------------

_KEYWORDS = frozenset(
    {
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ORDER",
        "BY",
        "LIMIT",
        "OFFSET",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "TRUE",
        "FALSE",
        "NULL",
    }
)


def _parse_datetime(text: str) -> int:
    """Epoch ms of a SOQL dateTime literal (``2024-01-01T00:00:00Z``, ``...00.000+0000``, ``+01:00``)."""
    s = text
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    elif len(s) >= 5 and s[-5] in "+-" and s[-4:].isdigit():
        s = s[:-5] + s[-5:-2] + ":" + s[-2:]
    parsed = dt.datetime.fromisoformat(s)
    return int(parsed.timestamp() * 1000)


class _Parser:
    def __init__(self, soql: str) -> None:
        self.soql = soql
        self.toks = tokenize(soql)
        self.i = 0

    # helpers
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def _next(self) -> Token:
        t = self.toks[self.i]
        if t.kind is not Tok.EOF:
            self.i += 1
        return t

    def _is_kw(self, *words: str) -> bool:
        t = self.tok
        return t.kind is Tok.IDENT and t.text.upper() in words

    def _unexpected(self, t: Token | None = None) -> SoqlError:
        t = t or self.tok
        # Salesforce prints EOF without quotes and tokens in single quotes.
        reason = "unexpected token: <EOF>" if t.kind is Tok.EOF else f"unexpected token: '{t.text}'"
        return _malformed(self.soql, t.pos, reason)

    def _expect_kw(self, word: str) -> Token:
        if not self._is_kw(word):
            raise self._unexpected()
        return self._next()

    def _expect(self, kind: Tok) -> Token:
        if self.tok.kind is not kind:
            raise self._unexpected()
        return self._next()

    def _field(self) -> FieldRef:
        t = self.tok
        if t.kind is not Tok.IDENT or t.text.upper() in _KEYWORDS:
            raise self._unexpected()
        self._next()
        return FieldRef(t.text, t.pos)

    # grammar
    def query(self) -> Query:
        self._expect_kw("SELECT")
        fields: list[FieldRef] = []
        count = False
        if self._is_kw("COUNT") and self.toks[self.i + 1].kind is Tok.LPAREN:
            self._next()
            self._expect(Tok.LPAREN)
            self._expect(Tok.RPAREN)
            count = True
        else:
            fields.append(self._field())
            while self.tok.kind is Tok.COMMA:
                self._next()
                fields.append(self._field())
        self._expect_kw("FROM")
        obj = self.tok
        if obj.kind is not Tok.IDENT or obj.text.upper() in _KEYWORDS:
            raise self._unexpected()
        self._next()
        where: Expr | None = None
        order: list[OrderItem] = []
        limit: int | None = None
        offset: int | None = None
        if self._is_kw("WHERE"):
            self._next()
            where = self.cond()
        if self._is_kw("ORDER"):
            self._next()
            self._expect_kw("BY")
            order.append(self.order_item())
            while self.tok.kind is Tok.COMMA:
                self._next()
                order.append(self.order_item())
        if self._is_kw("LIMIT"):
            self._next()
            limit = self._int()
        if self._is_kw("OFFSET"):
            self._next()
            offset = self._int()
        if self.tok.kind is not Tok.EOF:
            raise self._unexpected()
        return Query(self.soql, tuple(fields), count, obj.text, obj.pos, where, tuple(order), limit, offset)

    def _int(self) -> int:
        t = self.tok
        if t.kind is not Tok.NUMBER or not t.text.isdigit():
            raise self._unexpected()
        self._next()
        return int(t.text)

    def order_item(self) -> OrderItem:
        f = self._field()
        desc = False
        if self._is_kw("ASC", "DESC"):
            desc = self._next().text.upper() == "DESC"
        # Default null ordering: nulls first ascending, last descending (ORDER BY docs:
        # https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_orderby.htm)
        nulls_last = desc
        if self._is_kw("NULLS"):
            self._next()
            if not self._is_kw("FIRST", "LAST"):
                raise self._unexpected()
            nulls_last = self._next().text.upper() == "LAST"
        return OrderItem(f, desc, nulls_last)

    def cond(self) -> Expr:
        items = [self.conj()]
        while self._is_kw("OR"):
            self._next()
            items.append(self.conj())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conj(self) -> Expr:
        items = [self.unary()]
        while self._is_kw("AND"):
            self._next()
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Expr:
        if self._is_kw("NOT"):
            self._next()
            return Not(self.unary())
        if self.tok.kind is Tok.LPAREN:
            self._next()
            inner = self.cond()
            self._expect(Tok.RPAREN)
            return inner
        return self.predicate()

    def predicate(self) -> Expr:
        f = self._field()
        if (
            self._is_kw("NOT")
            and self.toks[self.i + 1].kind is Tok.IDENT
            and self.toks[self.i + 1].text.upper() == "IN"
        ):
            self._next()
            self._next()
            return In(f, self._literal_list(), True)
        if self._is_kw("IN"):
            self._next()
            return In(f, self._literal_list(), False)
        if self._is_kw("LIKE"):
            self._next()
            t = self._expect(Tok.STRING)
            return Like(f, t.like)
        t = self.tok
        if t.kind is not Tok.OP:
            raise self._unexpected()
        self._next()
        vt = self.tok
        value = self._literal()
        return Cmp(f, "!=" if t.text == "<>" else t.text, value, vt.pos)

    def _literal_list(self) -> tuple[Literal, ...]:
        self._expect(Tok.LPAREN)
        values = [self._literal()]
        while self.tok.kind is Tok.COMMA:
            self._next()
            values.append(self._literal())
        self._expect(Tok.RPAREN)
        return tuple(values)

    def _literal(self) -> Literal:
        t = self.tok
        if t.kind is Tok.STRING:
            self._next()
            return t.text
        if t.kind is Tok.NUMBER:
            self._next()
            try:
                return float(t.text) if "." in t.text else int(t.text)
            except ValueError:
                raise self._unexpected(t) from None
        if t.kind is Tok.DATETIME:
            self._next()
            try:
                return DateTimeLiteral(_parse_datetime(t.text), t.text)
            except ValueError:
                raise self._unexpected(t) from None
        if t.kind is Tok.DATE:
            self._next()
            return DateLiteral(t.text)
        if t.kind is Tok.IDENT and t.text.upper() in ("TRUE", "FALSE"):
            self._next()
            return t.text.upper() == "TRUE"
        if t.kind is Tok.IDENT and t.text.upper() == "NULL":
            self._next()
            return None
        raise self._unexpected()


def parse(soql: str) -> Query:
    """Parse one SOQL statement; raises :class:`SoqlError` (MALFORMED_QUERY) on bad syntax."""
    try:
        return _Parser(soql).query()
    except RecursionError:  # thousands of nested parentheses: refused, not a crash
        raise SoqlError("MALFORMED_QUERY", "the query nests too deeply") from None
