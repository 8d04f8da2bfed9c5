"""User-supplied `--where` predicates: one boolean expression over `documents` columns and `meta`.

Checked with DuckDB's own parser before anything runs: the text must parse as exactly one expression
in `SELECT … FROM documents WHERE (<predicate>)`, reference only the documents table's columns, and
contain no subquery and no function that reads files, touches sequences or settings, or runs SQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import duckdb

from saeembed.errors import SaeembedError

DOCUMENT_COLUMNS = frozenset({"doc_id", "corpus_id", "external_id", "text", "meta", "content_hash", "ingested_at"})

# Functions with effects beyond computing a value from their arguments (reading files or the network,
# changing sequences, settings or the random seed, running SQL text).
FORBIDDEN_FUNCTION = re.compile(
    r"^(read_\w+|\w+_scan|glob|query|query_table|nextval|currval|setseed|getenv|current_setting|"
    r"set_\w+|load_\w+|install_\w+|export_\w+|import_\w+|checkpoint|force_checkpoint|pragma_\w+|"
    r"http\w*|sql_\w+|json_execute_serialized_sql|duckdb_\w+|which_secret|system)$",
    re.IGNORECASE,
)


def check_predicate(predicate: str, option: str = "--where") -> str:
    """The predicate, stripped, if it is safe to splice as `WHERE (<predicate>)`; else a clear error."""
    text = predicate.strip()
    if not text:
        raise SaeembedError(f"{option} is empty: give one boolean expression, e.g. meta->>'model' = 'v2'")
    if ";" in _outside_quotes(text):
        raise SaeembedError(f"{option} must be a single expression, not several statements: {text!r}")
    serialized = (
        duckdb.connect()
        .execute("SELECT json_serialize_sql(?)", [f"SELECT 1 FROM documents WHERE ({text})"])
        .fetchone()[0]
    )
    tree = json.loads(serialized)
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        reason = tree.get("error_message", "not a single expression").split("\n")[0]
        raise SaeembedError(f"{option} is not a valid SQL expression ({reason}): {text!r}")
    node = tree["statements"][0]["node"]
    if node.get("type") != "SELECT_NODE" or node.get("from_table", {}).get("table_name") != "documents":
        raise SaeembedError(f"{option} must be a single expression, not several statements: {text!r}")
    for expression in _expressions(node["where_clause"]):
        kind = expression.get("class")
        if kind == "SUBQUERY":
            raise SaeembedError(f"{option} may not contain a subquery: {text!r}")
        if kind == "FUNCTION" and FORBIDDEN_FUNCTION.match(expression.get("function_name", "")):
            raise SaeembedError(f"{option} may not call {expression['function_name']}(): {text!r}")
        if kind == "COLUMN_REF":
            name = expression["column_names"][-1].lower()
            if name not in DOCUMENT_COLUMNS:
                known = ", ".join(sorted(DOCUMENT_COLUMNS))
                raise SaeembedError(f"{option} refers to unknown column '{name}' (documents has: {known})")
    return text


def _expressions(node: Any) -> Iterator[dict[str, Any]]:
    """Every expression node of a serialized expression tree (depth first)."""
    if isinstance(node, dict):
        if "class" in node:
            yield node
        for value in node.values():
            yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def _outside_quotes(text: str) -> str:
    """`text` with quoted strings and identifiers removed (a ';' inside 'a;b' is data, not a separator)."""
    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "", text)
