"""`--where` predicates: what is accepted, what is refused, and a property-based check that whatever is
accepted stays inside its corpus and reads no file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saeembed.errors import SaeembedError
from saeembed.storage.predicates import Sandbox, parse_predicate
from saeembed.storage.store import Store

SECRET = "TOPSECRET-4242"


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "secret.txt"
    path.write_text(f"{SECRET}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Corpus 'a' (doc_id 1–6) and corpus 'b' (7–10), documents only: predicates need no embedding."""
    path = tmp_path_factory.mktemp("predicates") / "two.duckdb"
    with Store.open(path) as store:
        for corpus, topics in (
            ("a", ["Sports", "Sports", "Business", "World", "Sports", "Sci"]),
            ("b", ["Sports"] * 4),
        ):
            store.add_documents(
                corpus,
                pl.DataFrame(
                    {
                        "external_id": [f"{corpus}{i}" for i in range(len(topics))],
                        "text": [f"{topic} story {i} from {corpus}" for i, topic in enumerate(topics)],
                        "meta": [json.dumps({"topic": topic, "n": i}) for i, topic in enumerate(topics)],
                        "content_hash": [f"{corpus}{i}" for i in range(len(topics))],
                    }
                ),
            )
    return path


@pytest.mark.parametrize(
    ("text", "rebuilt", "columns"),
    [
        ("  meta->>'topic' = 'Sports' ", "((meta ->> 'topic') = 'Sports')", ("meta",)),
        ("text LIKE '%a;b%'", "(\"text\" ~~ '%a;b%')", ("text",)),
        ("text = 'It''s'", "(\"text\" = 'It''s')", ("text",)),
        ("(meta->>'n')::INTEGER BETWEEN 1 AND 3", "(CAST((meta ->> 'n') AS INTEGER) BETWEEN 1 AND 3)", ("meta",)),
        ("doc_id IN (1, 2) AND length(text) > 3", '((doc_id IN (1, 2)) AND (length("text") > 3))', ("doc_id", "text")),
        ("TRUE -- a trailing comment", "true", ()),
    ],
)
def test_accepted_predicates_are_rebuilt_by_duckdb(text, rebuilt, columns):
    predicate = parse_predicate(text)
    assert (predicate.text, predicate.sql, predicate.columns) == (text.strip(), rebuilt, columns)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The attacks of issue 12: a closing parenthesis appending clauses of its own.
        (
            "meta->>'topic' = 'Sports') LIMIT (SELECT ascii(content[1]) FROM read_text('/etc/passwd')",
            "no clause of its own",
        ),
        (
            "TRUE) GROUP BY ALL HAVING ((SELECT replace(content, chr(10), ' | ') FROM read_text('secret.txt'))"
            "::INTEGER > 0",
            "no clause of its own",
        ),
        ("TRUE) UNION SELECT doc_id FROM documents WHERE (TRUE", "no clause of its own"),
        ("TRUE) QUALIFY (TRUE", "no clause of its own"),
        ("TRUE) USING SAMPLE (1", "no clause of its own"),
        ("1=1; DROP TABLE documents", "not several statements"),
        ("read_text('/etc/passwd') IS NOT NULL", r"may not call read_text\(\)"),
        ("read_csv('/etc/passwd') IS NOT NULL", r"may not call read_csv\(\)"),
        ("EXISTS (SELECT 1 FROM corpora)", "may not contain a subquery"),
        ("doc_id IN (SELECT doc_id FROM documents)", "may not contain a subquery"),
        ("count(*) > 1", "may not call count_star"),
        ("max(doc_id) OVER () > 1", "may not contain a window function"),
        ("list_filter([1], x -> x > 0) = [1]", "may not contain a lambda"),
        ("nextval('doc_id_seq') > 0", r"may not call nextval\(\)"),
        ("current_setting('threads') = '1'", r"may not call current_setting\(\)"),
        ("getvariable('x') IS NULL", r"may not call getvariable\(\)"),
        ("main.length(text) > 1", "built-in functions only"),
        ("text = ?", "may not contain a parameter"),
        ("COLUMNS('*') = 1", r"may not contain \*"),
        ("d.text = 'x'", "use a column name of documents alone"),
        ("feature_id = 3", "refers to unknown column 'feature_id'"),
        ("text LIKE", "is not a valid SQL expression"),
        ("TRUE AS x", "is not a valid SQL expression"),
        ("   ", "is empty"),
        ("x" * 10_001, "at most 10,000"),
    ],
)
def test_refused_predicates_name_the_problem(text, message):
    with pytest.raises(SaeembedError, match=message):
        parse_predicate(text, "--where")


def test_a_predicate_escaping_its_parentheses_is_confined_to_the_corpus(two_corpora):
    # `) OR (` once counted other corpora's documents: rebuilt from the tree, it is one expression.
    predicate = parse_predicate("meta->>'topic' = 'Sports') OR (meta->>'topic' = 'Sports'")
    assert predicate.sql == "(((meta ->> 'topic') = 'Sports') OR ((meta ->> 'topic') = 'Sports'))"
    with Store.open(two_corpora, read_only=True) as store:
        assert store.documents_matching(store.corpus_id("a"), predicate).tolist() == [1, 2, 5]
        other = parse_predicate("FALSE) OR (corpus_id = 2")
        assert store.documents_matching(store.corpus_id("a"), other).tolist() == []


def test_the_sandbox_reads_no_file_and_changes_no_setting(secret_file):
    with Sandbox() as sandbox:
        for sql in (f"SELECT * FROM read_text('{secret_file}')", "SET enable_external_access = true"):
            with pytest.raises(Exception, match="disabled by configuration|Cannot change configuration"):
                sandbox._con.execute(sql)


def test_a_predicate_that_fails_to_run_says_so_in_one_line(two_corpora):
    with Store.open(two_corpora, read_only=True) as store, pytest.raises(SaeembedError) as error:
        store.documents_matching(1, parse_predicate("(meta->>'topic')::INTEGER > 1"))
    assert str(error.value).startswith("--where failed: Conversion Error") and "\n" not in str(error.value)


# Fragments an attacker would combine: clause keywords, parentheses, comments, quotes, statement
# separators, file and side-effect functions, unicode lookalikes of quotes and parentheses.
FRAGMENTS = [
    "meta->>'topic' = 'Sports'",
    "text LIKE '%story%'",
    "doc_id > 2",
    "corpus_id = 2",
    "TRUE",
    "FALSE",
    "NULL",
    ")",
    "(",
    " OR ",
    " AND ",
    " NOT ",
    " LIMIT 1",
    " GROUP BY ALL",
    " HAVING ",
    " QUALIFY ",
    " USING SAMPLE 1",
    " UNION SELECT doc_id FROM documents",
    " FROM corpora",
    " WHERE ",
    "(SELECT 1)",
    "read_text('{secret}')",
    "read_csv('{secret}')",
    "'{secret}'",
    "content",
    "getenv('HOME')",
    "current_setting('home_directory')",
    "--",
    "/*",
    "*/",
    "\n",
    "'",
    '"',
    ";",
    "\u2019",  # right single quotation mark
    "\uff07",  # fullwidth apostrophe
    "\uff09",  # fullwidth right parenthesis
    "ＳＥＬＥＣＴ",
    " = ",
    "1",
    "'x'",
    "::VARCHAR",
    "COLUMNS(*)",
    "$1",
]


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parts=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=8))
def test_generated_predicates_are_refused_or_confined_to_their_corpus(two_corpora, secret_file, parts):
    text = "".join(parts).replace("{secret}", str(secret_file))
    try:
        predicate = parse_predicate(text)
    except SaeembedError as error:
        assert SECRET not in str(error)
        return
    # Accepted: DuckDB rebuilt it, it reads only documents' columns, and evaluated in the sandbox it
    # selects documents of corpus 'a' only, reading no file.
    assert set(predicate.columns) <= {
        "doc_id",
        "corpus_id",
        "external_id",
        "text",
        "meta",
        "content_hash",
        "ingested_at",
    }
    with Store.open(two_corpora, read_only=True) as store:
        try:
            found = store.documents_matching(store.corpus_id("a"), predicate)
        except SaeembedError as error:
            assert SECRET not in str(error)
            return
    assert np.isin(found, np.arange(1, 7)).all()
