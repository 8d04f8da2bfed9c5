"""How large is an explore page of 10,000 documents, and how soon is it interactive in a browser?

    python benchmarks/explore_scale.py [--docs 10000] [--db ~/.cache/saeembed/bench/explore.duckdb] [--loads 3]

Builds (once; reused from --db) a synthetic store: `--docs` documents of 40 words in four planted topics,
each with ≈ 400–600 present concepts of 8,192 (as a news article has with the default SAE; a power law over
ids plus 24 concepts of its topic), a `topic` meta column and a label per concept. Then it times the map
(`explore_map`: UMAP of the documents' present concepts), writes the page and prints its size, and opens it
`--loads` times in headless Chromium (Debian's `chromium` and `chromium-driver`), network cut off, printing the
seconds from the start of the load until the page says it is ready (the map drawn and answering events)
and until a selection of one topic's documents has listed its concepts; best of the loads.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from saeembed.analysis.explore import explore_map
from saeembed.reports.explore import explore_page
from saeembed.storage.store import Store
from saeembed.storage.synthetic import (
    distinct_draws,
    synthetic_corpus,
    synthetic_labels,
    synthetic_sae,
    write_drawn_concepts,
)

DEFAULT_DB = Path.home() / ".cache" / "saeembed" / "bench" / "explore.duckdb"
CONCEPTS = 8192
TOPICS = ("Sports", "Business", "Sci/Tech", "World")
WORDS = [
    "the",
    "a",
    "of",
    "to",
    "in",
    "and",
    "game",
    "market",
    "team",
    "bank",
    "film",
    "song",
    "match",
    "price",
    "vote",
    "court",
    "law",
]
BATCH_DOCS = 2000


def build(path: Path, docs: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = np.asarray(WORDS)
    topics = rng.integers(0, len(TOPICS), docs)
    with Store.open(path) as store:
        sae = synthetic_sae(store, CONCEPTS)
        texts = [" ".join(words[rng.integers(0, len(words), 40)]) for _ in range(docs)]
        metas = [{"topic": TOPICS[t]} for t in topics]
        run, doc_ids = synthetic_corpus(store, "syn", texts, metas, sae_id=sae, layer=15, max_tokens=128)
        for start in range(0, docs, BATCH_DOCS):
            n = min(BATCH_DOCS, docs - start)
            background = np.floor(CONCEPTS * rng.random((n, 560)) ** 1.6).astype(np.int32)
            own = (8000 + 48 * topics[start : start + n, None] + rng.integers(0, 48, (n, 40))).astype(np.int32)
            drawn = np.concatenate([background, own], axis=1)
            present = distinct_draws(drawn)
            present &= rng.random(drawn.shape) >= rng.uniform(0.0, 0.3, (n, 1))
            write_drawn_concepts(store, run, doc_ids[start : start + n], drawn, present, rng)
        labels = [" ".join(words[rng.integers(0, len(words), 3)]) for _ in range(CONCEPTS)]
        synthetic_labels(store, sae, run, labels)


def browser_timings(page: Path, topic_docs: list[int], loads: int) -> tuple[float, float]:
    """Best seconds from navigation start to `saeembed.ready`, and to a listed selection, over `loads`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*"]})
    ready, selected = [], []
    try:
        for _ in range(loads):
            driver.get("about:blank")
            driver.get(page.resolve().as_uri())
            WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.saeembed && saeembed.ready"))
            origin = driver.execute_script("return performance.timeOrigin") / 1000
            ready.append(time.time() - origin)
            driver.execute_script("saeembed.select(arguments[0])", topic_docs)
            selected.append(time.time() - origin)
    finally:
        driver.quit()
    return min(ready), min(selected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--loads", type=int, default=3)
    args = parser.parse_args()
    if not args.db.exists():
        args.db.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        build(args.db, args.docs)
        print(f"built {args.docs:,} documents in {time.perf_counter() - started:.0f} s")
    with Store.open(args.db, read_only=True) as store:
        started = time.perf_counter()
        found = explore_map(store, "syn", color_by="topic")
        mapped = time.perf_counter() - started
    started = time.perf_counter()
    page = explore_page(found)
    rendered = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "explore.html"
        path.write_text(page, encoding="utf-8")
        sports = found.points.filter(found.points["color"] == "Sports")["doc_id"].to_list()
        ready, selected = browser_timings(path, sports, args.loads)
    size = len(page.encode())
    per_doc = np.mean([len(p) for p in found.points["present"].to_list()])
    print(f"documents on the map: {found.points.height:,} ({per_doc:.0f} concepts each carried)")
    print(f"map (UMAP and all): {mapped:.1f} s; page built in {rendered:.1f} s")
    print(f"page: {size / 1e6:.1f} MB ({size / found.points.height:,.0f} bytes a document, plotly.js included)")
    print(f"in headless Chromium, best of {args.loads}: ready {ready:.2f} s after the load began, ")
    print(f"  a selection of {len(sports):,} documents listed its concepts at {selected:.2f} s")


if __name__ == "__main__":
    main()
