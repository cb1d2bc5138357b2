"""Library INFO logs (per-epoch summaries) on stderr for the commands that train."""

from __future__ import annotations


def show_progress_logs() -> None:
    """Show the library's INFO lines (per-epoch summaries) on stderr, rank 0 only under torchrun."""
    import logging
    import os

    if os.environ.get("RANK", "0") == "0":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
