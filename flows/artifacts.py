"""What the flows' Prefect artifacts share: a link to the page a flow wrote, which the Prefect UI opens."""

from __future__ import annotations

from pathlib import Path


def page_link(path: str | Path | None) -> str:
    """A markdown link to the page at `path` (file:// and absolute, so it opens from the Prefect UI on this
    machine), or 'none' where no page was written."""
    if path is None:
        return "none"
    target = Path(path).expanduser().resolve()
    return f"[{target.name}]({target.as_uri()})"
