"""Every kind of page, opened in headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
Selenium) with every network request refused: it renders what it claims (the chart's marks, the table's
rows), logs no console error, and asks for nothing over the network. Skipped, with the reason, where
Chromium is not installed; CI installs it (.ci/run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from saeembed.analysis.cluster import cluster_documents
from saeembed.analysis.correlate import correlate_column, correlate_pairs
from saeembed.analysis.diff import diff
from saeembed.analysis.explore import explore_map
from saeembed.analysis.lookup import HISTOGRAM_BINS, concept_profile
from saeembed.analysis.releases import compare_releases
from saeembed.analysis.retrieve import search_documents
from saeembed.jobs import embed, ingest
from saeembed.model.pooling import EmbedOptions
from saeembed.reports.concept import concept_report
from saeembed.reports.explore import explore_page
from saeembed.reports.html import write_report
from saeembed.reports.pages import analysis_report
from saeembed.storage.store import Store
from tests.support import (
    CORRELATE_DOCS,
    CORRELATE_PEAK,
    EXPLORE_TOPICS,
    TEXTS,
    build_store,
    explore_docs,
    release_docs,
    small_sae,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="headless Chromium is not installed (apt-get install chromium chromium-driver; CI does)",
)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium whose network is cut off: file:// pages load, any http(s) or ws request fails and
    is logged (performance log), as are console messages (browser log)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]})
    yield driver
    driver.quit()


def opened(driver, page: Path) -> tuple[list[dict], list[str]]:
    """Open `page`; the console's error entries and the URLs of every request that left the file."""
    driver.get_log("browser"), driver.get_log("performance")  # drop what earlier pages left
    driver.get(page.resolve().as_uri())
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(("file:", "data:", "about:")):
                requests.append(url)
    return errors, requests


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """One page of every kind, with what each must show (counted from the analyses' own results)."""
    folder = tmp_path_factory.mktemp("browser")
    path = build_store(folder / "pages.duckdb", {"c": CORRELATE_DOCS, "r": release_docs()}, peak=CORRELATE_PEAK)
    made: dict[str, tuple[int, dict]] = {}
    with Store.open(path) as store:
        halves = {"where_a": "meta->>'half' = 'first'", "where_b": "meta->>'half' = 'second'"}
        result = diff(store, "c", "c", **halves)
        made["diff"] = (result.analysis_id, {"bars": result.table.height})
        pairs = correlate_pairs(store, "c", min_npmi=0.3, min_count=2)
        made["correlate"] = (pairs.analysis_id, {"rows": pairs.pairs.height})
        column = correlate_column(store, "c", "half", min_count=2)
        made["correlate-column"] = (column.analysis_id, {"rows": min(column.table.height, 50)})
        clusters = cluster_documents(store, "c", concepts=[1, 2, 3, 4, 5], method="spectral", k=2)
        mapped = clusters.assignments.filter(pl.col("x").is_not_null()).height
        made["cluster"] = (clusters.analysis_id, {"points": mapped})
        found = search_documents(store, "the striker scored", corpus="c", mode="dense", top=5)
        made["search"] = (found.analysis_id, {"rows": found.documents.height})
        releases = compare_releases(store, "r", top=5)
        made["compare-releases"] = (releases.analysis_id, {"lines": releases.trend["feature_id"].n_unique()})
        written = {}
        for kind, (analysis_id, expected) in made.items():
            written[kind] = (write_report(folder / f"{kind}.html", analysis_report(store, analysis_id)[1]), expected)
    source = folder / "news.parquet"
    pl.DataFrame({"id": [f"n{i}" for i in range(len(TEXTS))], "text": TEXTS}).write_parquet(source)
    with Store.open(folder / "concept.duckdb") as store:
        ingest(store, source, corpus="news")
        embed(store, "news", sae=str(small_sae(folder / "sae")), device="cpu", options=EmbedOptions(max_tokens=32))
        strongest = store.query("SELECT feature_id FROM concept_frequency ORDER BY n_docs DESC, feature_id LIMIT 1")
        profile = concept_profile(store, int(strongest["feature_id"][0]), corpus="news", top=5)
        linked_pairs = correlate_pairs(store, "news", min_npmi=0.0, min_count=2, top=5)
    concept = write_report(folder / "concept.html", concept_report(profile))
    written["concept"] = (concept, {"bins": HISTOGRAM_BINS, "documents": profile.view.documents.height})
    from typer.testing import CliRunner

    from saeembed.cli import app

    linked = folder / "linked.html"
    command = ["report", str(linked_pairs.analysis_id), "--html", str(linked), "--concept-pages", "--json"]
    made = CliRunner().invoke(app, [*command, "--db", str(folder / "concept.duckdb")])
    assert made.exit_code == 0, made.output
    written["linked"] = (linked, {"links": json.loads(made.stdout)["concepts"], "cells": 2 * linked_pairs.pairs.height})
    topics = build_store(folder / "topics.duckdb", {"c": explore_docs()})
    with Store.open(topics) as store:
        for topic, first in EXPLORE_TOPICS.items():  # labels shipped with the SAE, for the label search
            for offset in range(4):
                store.query(
                    "INSERT INTO features (sae_id, feature_id, method, model, label) VALUES (1, ?, 'tokens', 'm', ?)",
                    [first + offset, f"{topic.lower()} word {offset}"],
                )
        found = explore_map(store, "c", color_by="topic")
    explore = write_report(folder / "explore.html", explore_page(found))
    written["explore"] = (explore, {"points": found.points.height, "legend": len(EXPLORE_TOPICS), "map": found})
    return written


# (kind, CSS selector, what it counts) for the marks each page must render.
MARKS = [
    ("diff", "svg[aria-label='delta with confidence intervals'] rect", "bars"),
    ("correlate", "table:last-of-type tr", "rows"),
    ("correlate-column", "table:last-of-type tr", "rows"),
    ("cluster", "svg[aria-label='2-D map of the documents by cluster'] circle", "points"),
    ("search", "table:last-of-type tr", "rows"),
    ("compare-releases", "svg[aria-label='concept frequency per release'] polyline", "lines"),
    ("concept", "svg[aria-label='activation histogram'] rect.bin", "bins"),
    ("concept", "tr.top-doc", "documents"),
    ("explore", ".scatterlayer .point", "points"),
    ("explore", ".legend .traces", "legend"),
]


@pytest.mark.parametrize(("kind", "selector", "count"), MARKS, ids=[f"{k}-{c}" for k, _, c in MARKS])
def test_every_page_renders_its_marks_offline_without_console_errors(browser, pages, kind, selector, count):
    from selenium.webdriver.common.by import By

    page, expected = pages[kind]
    errors, requests = opened(browser, page)
    if kind == "explore":
        wait_until_ready(browser)
    assert errors == [] and requests == []
    found = browser.find_elements(By.CSS_SELECTOR, selector)
    header_rows = 1 if selector.endswith(" tr") else 0
    assert expected[count] > 0 and len(found) == expected[count] + header_rows, (kind, len(found), expected)
    assert all(element.is_displayed() for element in found[:5])


def wait_until_ready(driver, seconds: float = 30.0) -> float:
    """Wait for the explore page to say it is ready; the seconds it took since the page started loading."""
    import time

    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, seconds).until(lambda d: d.execute_script("return window.saeembed && saeembed.ready"))
    started = driver.execute_script("return performance.timeOrigin")
    return time.time() - started / 1000


def test_the_explore_page_answers_a_hover_a_selection_and_a_label_search(browser, pages):
    """On the planted topics: hovering a point shows its document; selecting the Sports documents lists the
    four Sports concepts first; searching a label lights up exactly the documents where that concept is."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    page, expected = pages["explore"]
    found = expected["map"]
    errors, requests = opened(browser, page)
    wait_until_ready(browser)
    point = browser.find_elements(By.CSS_SELECTOR, ".scatterlayer .point")[7]
    ActionChains(browser).move_to_element(point).perform()
    shown = browser.execute_script("return saeembed.shown")
    assert shown in found.points["doc_id"].to_list()
    assert browser.find_element(By.ID, "doc").text.startswith(f"document {shown} · ")
    sports = found.points.filter(pl.col("color") == "Sports")["doc_id"].to_list()
    browser.execute_script("saeembed.select(arguments[0])", sports)
    listed = browser.execute_script("return saeembed.listed")
    assert set(listed[:4]) == {10, 11, 12, 13} and browser.find_element(By.ID, "selection-size").text.startswith("30 ")
    assert browser.execute_script("return saeembed.search('sports word 2')") == [12]
    lit = browser.execute_script("return saeembed.highlight(12)")
    assert lit == found.points.filter(pl.col("present").list.contains(12)).height
    opacities = browser.execute_script("return document.getElementById('map').data.flatMap(t => t.marker.opacity)")
    assert sorted(set(opacities)) == [0.08, 1] and opacities.count(1) == lit
    assert errors == [] and requests == [] and [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_a_reports_concepts_link_to_their_pages(browser, pages):
    """`report --concept-pages`: every concept the pairs list links to its own page, which opens offline."""
    from selenium.webdriver.common.by import By

    page, expected = pages["linked"]
    errors, requests = opened(browser, page)
    links = browser.find_elements(By.CSS_SELECTOR, "td.concept a")
    assert expected["cells"] > 0 and len(links) == expected["cells"] and errors == [] and requests == []
    assert sorted({int(a.text) for a in links}) == sorted(expected["links"])
    first = links[0].text
    links[0].click()
    assert browser.title.startswith(f"concept {first}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg[aria-label='activation histogram'] rect.bin")) == 20
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_checks_catch_a_network_request_and_a_console_error(browser, tmp_path):
    """The checks themselves can fail: an external image is a logged request, a broken script an error."""
    leaky, broken = tmp_path / "leaky.html", tmp_path / "broken.html"
    leaky.write_text("<!doctype html><html><body><img src='https://example.invalid/x.png'></body></html>")
    broken.write_text("<!doctype html><html><body><script>no_such_function()</script></body></html>")
    assert opened(browser, leaky)[1] == ["https://example.invalid/x.png"]
    errors, requests = opened(browser, broken)
    assert requests == [] and len(errors) == 1 and "no_such_function" in errors[0]["message"]
