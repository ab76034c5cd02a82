"""docs/errors.md lists every ErrorInfo reason the code raises."""

from __future__ import annotations

import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
reasons = runpy.run_path(str(REPO / "scripts" / "error_reasons.py"))


def test_the_scanner_finds_reasons_of_every_service_and_their_codes() -> None:
    found = {(r.reason, r.code) for r in reasons["collect"]()}
    assert ("RUN_NOT_FOUND", "NOT_FOUND") in found  # a constant, through a helper
    assert ("INTERNAL", "INTERNAL") in found  # the interceptor's catch-all
    areas = {reasons["_area"](r.where) for r in reasons["collect"]()}
    assert {"scheduler", "executor", "connector"} <= areas


def test_docs_errors_md_is_up_to_date() -> None:
    doc = (REPO / "docs" / "errors.md").read_text()
    expected = reasons["updated"](doc, reasons["render"](reasons["collect"]()))
    assert doc == expected, "docs/errors.md is out of date: run `make docs`"
