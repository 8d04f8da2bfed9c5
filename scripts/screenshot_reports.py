"""Render saeembed's HTML reports in headless Chromium and save screenshots, to look at them.

    python scripts/screenshot_reports.py --db saeembed.duckdb [--out reports/screenshots] [ANALYSIS …]

For each analysis (ids, or kinds such as diff / correlate / compare-releases for the latest of each; by
default the latest of every kind the database holds) it writes the report (`saeembed report`) and a
full-page PNG made by Debian's `chromium --headless`, with the network cut off (every host resolves to
nothing), so a page that needed an external resource would show it missing. Needs `chromium` on PATH
(`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from saeembed.reports.pages import analysis_report
from saeembed.storage.store import Store

KINDS = ("diff", "correlate", "correlate-column", "compare-releases")


def screenshot(page: Path, png: Path, *, width: int = 1200, height: int = 2400) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--window-size={width},{height}",
                f"--screenshot={png}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("analyses", nargs="*", help="analysis ids or kinds (default: the latest of every kind)")
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", default="reports/screenshots")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Store.open(args.db, read_only=True) as store:
        present = set(store.query("SELECT DISTINCT kind FROM analyses")["kind"].to_list())
        wanted = args.analyses or [kind for kind in KINDS if kind in present]
        pages = [analysis_report(store, analysis) for analysis in wanted]
    for analysis, (analysis_id, html) in zip(wanted, pages, strict=True):
        page = out / f"analysis-{analysis_id}.html"
        page.write_text(html, encoding="utf-8")
        png = page.with_suffix(".png")
        screenshot(page, png)
        print(f"{analysis}: {page} → {png} ({png.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
