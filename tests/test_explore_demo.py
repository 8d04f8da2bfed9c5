"""The explore page of the demo itself, in the browser (slow: the demo's 3,000 articles are embedded and
labelled first, ≈ 4 minutes; CI runs it): 3,000 points in the four topics' colours, and selecting the Sports
articles lists concepts of sport first."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from saeembed.analysis.explore import explore_map
from saeembed.concepts.labels import label_concepts
from saeembed.jobs import embed, ingest
from saeembed.reports.explore import explore_page
from saeembed.reports.html import write_report
from saeembed.storage.corpora import demo_corpus
from saeembed.storage.store import Store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("chromium") is None or shutil.which("chromedriver") is None,
        reason="headless Chromium is not installed (apt-get install chromium chromium-driver; CI does)",
    ),
]

SPORT_WORDS = {"game", "games", "season", "team", "league", "cup", "coach", "win", "won", "victory", "points",
               "scored", "match", "sox", "yankees", "olympic", "athens", "champions", "night", "streak", "field",
               "football", "baseball", "basketball", "nfl", "nba", "hockey", "soccer", "players", "play"}  # fmt: skip


def test_the_demo_map_shows_its_topics_and_a_sports_selection_lists_sport(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    source = tmp_path / "demo.parquet"
    demo_corpus(n=3000).write_parquet(source)
    with Store.open(tmp_path / "demo.duckdb") as store:
        ingest(store, source, corpus="demo")
        embed(store, "demo")
        label_concepts(store, "demo")
        found = explore_map(store, "demo", color_by="topic")
    page = write_report(tmp_path / "explore.html", explore_page(found))
    sports = found.points.filter(pl.col("color") == "Sports")["doc_id"].to_list()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*"]})
        driver.get(page.as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.saeembed && saeembed.ready"))
        points = len(driver.find_elements(By.CSS_SELECTOR, ".scatterlayer .point"))
        legend = [element.text for element in driver.find_elements(By.CSS_SELECTOR, ".legend .traces")]
        driver.execute_script("saeembed.select(arguments[0])", sports)
        listed = [element.text for element in driver.find_elements(By.CSS_SELECTOR, "#selected li")]
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert points == 3000 and sorted(legend) == ["Business", "Sci/Tech", "Sports", "World"] and len(sports) == 750
    # Sport first: at least three of the first five listed concepts' labels name a sport word.
    first = [set(item.split(":", 1)[1].replace(",", " ").lower().split()) for item in listed[:5]]
    assert sum(bool(words & SPORT_WORDS) for words in first) >= 3, listed[:5]
    assert errors == []
