"""User-supplied `--where` predicates: parsed, checked, rebuilt, and evaluated where they cannot reach files.

A predicate is one scalar boolean expression over a document's columns (`meta->>'model' = 'v2'`,
`text ILIKE '%refund%'`). The user's text never reaches the database:

1. DuckDB's own parser reads `SELECT (<text>)`; the statement must be exactly that one select list
   entry with nothing else (no FROM, WHERE, GROUP BY, HAVING, QUALIFY, LIMIT, SAMPLE, CTE, …).
2. Every node of the expression must be one of a short list of kinds (columns, constants, comparisons,
   AND/OR/NOT, IN lists, CASE, CAST, BETWEEN, COLLATE and scalar functions); subqueries, windows,
   aggregates, lambdas, parameters and `*` are refused at any depth. A function must be a built-in
   scalar function without effects (no sequences, settings, variables or sleeping); columns must be
   unqualified names of `documents`.
3. The SQL that runs is rebuilt from the checked tree by DuckDB (`json_deserialize_sql`), and the
   rebuilt text must parse back to the same tree.
4. It runs in a `Sandbox`: an in-memory DuckDB with external access disabled and its configuration
   locked, which sees only the batch of documents handed to it (the store's trusted SQL reads them).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pyarrow as pa

from saeembed.errors import SaeembedError

DOCUMENT_COLUMNS = ("doc_id", "corpus_id", "external_id", "text", "meta", "content_hash", "ingested_at")
"""The columns of `documents` a predicate may read."""

ALLOWED_NODES = frozenset(
    {
        "COLUMN_REF",
        "CONSTANT",
        "COMPARISON",
        "CONJUNCTION",
        "OPERATOR",
        "FUNCTION",
        "CASE",
        "CAST",
        "TYPE",
        "BETWEEN",
        "COLLATE",
    }
)
"""Expression kinds a predicate may contain (TYPE: the target of a CAST); anything else (SUBQUERY, WINDOW,
STAR, LAMBDA, PARAMETER…) is refused."""

# Built-in scalar functions whose value depends on more than their arguments: sequences, settings,
# variables, the query text, the random seed, or time spent (pg_sleep).
EFFECTFUL_FUNCTIONS = frozenset(
    {
        "nextval",
        "currval",
        "setseed",
        "current_setting",
        "getvariable",
        "current_query",
        "pg_sleep",
        "sleep_ms",
        "getenv",
        "error",
    }
)

SANDBOX_MEMORY = "2GB"
"""Memory a predicate's evaluation may use: an expression such as repeat(text, 10^9) fails instead of
exhausting the machine."""

MAX_PREDICATE_CHARS = 10_000


class Predicate(NamedTuple):
    """A checked predicate, ready to be evaluated in a `Sandbox`."""

    text: str
    """What the user wrote, stripped (recorded with analyses, shown in messages)."""
    sql: str
    """The expression as DuckDB rebuilt it from the checked parse tree: the only form that is ever run."""
    columns: tuple[str, ...]
    """The documents columns it reads (doc_id always comes with them)."""
    option: str
    """The option it came from (--where, --where-a, …), for messages."""


def parse_predicate(text: str, option: str = "--where") -> Predicate:
    """`text` checked and rebuilt, or a SaeembedError naming what is wrong with it."""
    if not isinstance(text, str):
        raise SaeembedError(f"{option} must be text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise SaeembedError(f"{option} is empty: give one boolean expression, e.g. meta->>'model' = 'v2'")
    if len(stripped) > MAX_PREDICATE_CHARS:
        raise SaeembedError(f"{option} is {len(stripped):,} characters long; at most {MAX_PREDICATE_CHARS:,}")
    if "\x00" in stripped:
        raise SaeembedError(f"{option} contains a NUL character")
    if ";" in _outside_quotes(stripped):
        raise SaeembedError(f"{option} must be a single expression, not several statements: {stripped!r}")
    expression = _single_expression(stripped, option)
    if (
        expression.get("class") == "FUNCTION"
        and expression.get("function_name") == "row"
        and not expression.get("arguments")
    ):
        raise SaeembedError(f"{option} holds no expression (only a comment?): {stripped!r}")
    columns = sorted(_check_nodes(expression, option))
    sql = _rebuild(expression)
    if _strip_locations(_single_expression(sql, option)) != _strip_locations(expression):
        raise SaeembedError(f"{option} could not be rebuilt faithfully: {stripped!r}")
    return Predicate(text=stripped, sql=sql, columns=tuple(columns), option=option)


def _outside_quotes(text: str) -> str:
    """`text` without its quoted strings and identifiers (a ';' inside 'a;b' is data, not a separator)."""
    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "", text)


def _parse(sql: str) -> dict[str, Any]:
    return json.loads(_parser_call("SELECT json_serialize_sql(?)", sql))


_parser_lock = threading.Lock()


@cache
def _parser() -> duckdb.DuckDBPyConnection:
    """One sandboxed connection for parsing (opening one per call costs ≈ 30 ms); it holds no data."""
    return duckdb.connect(":memory:", config=_SANDBOX_CONFIG)


def _parser_call(sql: str, argument: str) -> str:
    with _parser_lock:
        return _parser().execute(sql, [argument]).fetchone()[0]


def _single_expression(text: str, option: str) -> dict[str, Any]:
    """The one expression of `SELECT (<text>)`, after checking the statement holds nothing else."""
    # The newline ends a trailing `-- comment` before the closing parenthesis.
    tree = _parse(f"SELECT ({text}\n)")
    if tree.get("error"):
        reason = str(tree.get("error_message", "")).split("\n")[0] or "syntax error"
        raise SaeembedError(f"{option} is not a valid SQL expression ({reason}): {text!r}")
    statements = tree.get("statements", [])
    if len(statements) != 1:
        raise SaeembedError(f"{option} must be one expression, not several statements: {text!r}")
    node = dict(statements[0]["node"])
    select_list = node.pop("select_list", None)
    if node != _empty_select() or not isinstance(select_list, list) or len(select_list) != 1:
        raise SaeembedError(
            f"{option} must be one boolean expression, with no clause of its own "
            f"(FROM, WHERE, GROUP BY, HAVING, LIMIT, …): {text!r}"
        )
    expression = select_list[0]
    if expression.get("alias"):
        raise SaeembedError(f"{option} must be one boolean expression, without an alias: {text!r}")
    return expression


@cache
def _empty_select() -> dict[str, Any]:
    """The parse tree of `SELECT (TRUE)` without its select list: what a lone expression's statement is."""
    node = dict(_parse("SELECT (TRUE)")["statements"][0]["node"])
    node.pop("select_list")
    return node


def _check_nodes(expression: dict[str, Any], option: str) -> set[str]:
    """The columns `expression` reads; a SaeembedError for the first node it may not contain."""
    columns: set[str] = set()
    for node in _nodes(expression):
        kind = node.get("class")
        if kind == "SUBQUERY":
            raise SaeembedError(f"{option} may not contain a subquery")
        if kind not in ALLOWED_NODES:
            readable = {"WINDOW": "a window function", "STAR": "*", "LAMBDA": "a lambda", "PARAMETER": "a parameter"}
            raise SaeembedError(f"{option} may not contain {readable.get(kind, str(kind).lower())}")
        if kind == "COLUMN_REF":
            names = node.get("column_names") or []
            if len(names) != 1:
                raise SaeembedError(f"{option} refers to {'.'.join(names)!r}: use a column name of documents alone")
            name = names[0].lower()
            if name not in DOCUMENT_COLUMNS:
                known = ", ".join(DOCUMENT_COLUMNS)
                raise SaeembedError(f"{option} refers to unknown column '{names[0]}' (documents has: {known})")
            columns.add(name)
        elif kind == "FUNCTION":
            _check_function(node, option)
        elif kind == "TYPE" and (
            node.get("schema") or node.get("catalog") or str(node.get("type_name", "")).lower() not in _type_names()
        ):
            raise SaeembedError(f"{option} may cast to built-in types only, not {node.get('type_name')!r}")
    return columns


def _check_function(node: dict[str, Any], option: str) -> None:
    name = str(node.get("function_name", ""))
    if node.get("schema") or node.get("catalog"):
        qualifier = node.get("schema") or node.get("catalog")
        raise SaeembedError(f"{option} may call built-in functions only, not {qualifier}.{name}()")
    if node.get("filter") is not None or (node.get("order_bys") or {}).get("orders") or node.get("distinct"):
        raise SaeembedError(f"{option} may not call an aggregate: {name}()")
    if node.get("export_state"):
        raise SaeembedError(f"{option} may not export an aggregate's state")
    if any(argument.get("name") for argument in node.get("arguments") or []):
        raise SaeembedError(f"{option} may not pass named arguments to {name}()")
    if name.lower() in EFFECTFUL_FUNCTIONS or name.lower() not in _scalar_functions():
        raise SaeembedError(f"{option} may not call {name}(): only built-in scalar functions without side effects")


@cache
def _scalar_functions() -> frozenset[str]:
    """Names of DuckDB's built-in scalar functions and scalar macros (operators such as ->> included)."""
    with _parser_lock:
        rows = (
            _parser()
            .execute(
                "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
                "WHERE function_type IN ('scalar', 'macro') AND internal"
            )
            .fetchall()
        )
    return frozenset(row[0] for row in rows)


@cache
def _type_names() -> frozenset[str]:
    """Names of DuckDB's built-in types (aliases such as int and text included)."""
    with _parser_lock:
        rows = _parser().execute("SELECT DISTINCT lower(type_name) FROM duckdb_types() WHERE internal").fetchall()
    return frozenset(row[0] for row in rows)


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every expression node under `value` (depth first), wherever the serializer put it."""
    if isinstance(value, dict):
        if "class" in value:
            yield value
        for child in value.values():
            yield from _nodes(child)
    elif isinstance(value, list):
        for item in value:
            yield from _nodes(item)


def _rebuild(expression: dict[str, Any]) -> str:
    """The SQL text of a checked expression, written by DuckDB from the tree."""
    tree = _parse("SELECT (TRUE)")
    tree["statements"][0]["node"]["select_list"] = [expression]
    statement = _parser_call("SELECT json_deserialize_sql(?::JSON)", json.dumps(tree))
    prefix = "SELECT "
    if not statement.startswith(prefix):
        raise SaeembedError(f"could not rebuild the predicate: {statement!r}")
    return statement[len(prefix) :]


def _strip_locations(value: Any) -> Any:
    """`value` without the parser's source positions (they differ between the user's and the rebuilt text)."""
    if isinstance(value, dict):
        return {k: _strip_locations(v) for k, v in value.items() if not k.startswith("query_location")}
    if isinstance(value, list):
        return [_strip_locations(v) for v in value]
    return value


_SANDBOX_CONFIG = {
    "enable_external_access": False,
    "lock_configuration": True,
    "memory_limit": SANDBOX_MEMORY,
    "threads": 1,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


class Sandbox:
    """An in-memory DuckDB that evaluates checked predicates over batches of documents.

    It can read no file, load no extension and change no setting (external access off, configuration
    locked), and it holds nothing but the batch it is given: even a predicate that slipped past the
    checks could only see the documents it was asked about.
    """

    def __init__(self) -> None:
        self._con = duckdb.connect(":memory:", config=_SANDBOX_CONFIG)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def matching(self, predicate: Predicate, batches: Iterable[pa.RecordBatch]) -> np.ndarray:
        """doc_id (int64, in batch order) of the rows of `batches` where `predicate` is true.

        Each batch has doc_id and the predicate's columns (`meta` as JSON text).
        """
        found: list[np.ndarray] = []
        for batch in batches:
            self._con.register("documents", pa.Table.from_batches([batch]))
            try:
                ids = self._con.execute(self._select(predicate)).fetchnumpy()["doc_id"]
            except duckdb.Error as error:
                raise SaeembedError(f"{predicate.option} failed: {_first_line(error)}") from None
            finally:
                self._con.unregister("documents")
            found.append(np.asarray(ids, dtype=np.int64))
        return np.concatenate(found) if found else np.empty(0, dtype=np.int64)

    @staticmethod
    def _select(predicate: Predicate) -> str:
        columns = [f'"{c}"::JSON AS "{c}"' if c == "meta" else f'"{c}"' for c in predicate.columns if c != "doc_id"]
        source = ", ".join(["doc_id", *columns])
        return f"SELECT doc_id FROM (SELECT {source} FROM documents) WHERE ({predicate.sql})"


def _first_line(error: Exception) -> str:
    # DuckDB errors carry a multi-line hint (LINE 1: … ^); the first line says what went wrong.
    return re.sub(r"\s+", " ", str(error).split("\n")[0]).strip()
