"""audit.performance's browser loads: the pages it may be given, where their screenshots go, and how each
page's first visits are judged against the 2 s target (no browser here: tests/e2e/test_audit.py drives one)."""

from pathlib import Path

import pytest

from vigil.audit.browser import BrowserLoad, browser_items, checked_pages, screenshot_name
from vigil.core.errors import ConfigError


@pytest.mark.parametrize(("pages", "checked"), [
    (["/", "/prayers/1"], ["/", "/prayers/1"]),
    ("/slow?ms=2500, /", ["/slow?ms=2500", "/"]),  # --pages
])
def test_pages_are_paths_on_the_site(pages, checked):
    assert checked_pages(pages, "--pages") == checked


@pytest.mark.parametrize("pages", [[], "", ["https://elsewhere.example/"], ["/a b"], ["/$(reboot)"], [7], "prayers"])
def test_anything_but_a_path_on_the_site_is_refused_naming_where(pages):
    with pytest.raises(ConfigError, match="app_pages"):
        checked_pages(pages, "inventory/staging.yml: app_pages")


@pytest.mark.parametrize(("page", "name"), [
    ("/", "web1-home.png"), ("/prayers/1", "web1-prayers-1.png"), ("/slow?ms=2500", "web1-slow.png"),
])
def test_one_screenshot_per_host_and_page(page, name):
    assert screenshot_name("web1", page) == name


def loads(lcp: float | None, load: float, n: int = 5) -> list[BrowserLoad]:
    return [BrowserLoad(lcp, load, 20_480)] * n


@pytest.mark.parametrize(("found", "ok", "evidence"), [
    (loads(0.4, 0.3), True, "5 first visits in Chromium: LCP p50 400 ms, p95 400 ms; load event p50 300 ms, "
                            "p95 300 ms; transferred p50 20.0 KiB, p95 20.0 KiB (target 2 s)"),
    (loads(0.4, 0.3, 4) + [BrowserLoad(0.5, 2.6, 20_480)], False, "load event p50 300 ms, p95 2600 ms"),
    (loads(2.2, 0.9), False, "LCP p50 2200 ms, p95 2200 ms"),
    (loads(None, 0.2), False, "nothing contentful was painted"),
    # Painted from the server's HTML, then emptied when the page's blocked scripts failed: a blank page.
    (loads(0.4, 0.3, 4) + [BrowserLoad(0.4, 0.3, 20_480, text=0)], False, "EMPTY after its scripts ran in 1 of 5"),
    ([BrowserLoad(0.4, 0.3, 20_480, 120, ("script-src-elem blocked an inline script",))] * 5, False,
     "its Content-Security-Policy blocked: script-src-elem blocked an inline script"),
    ("answered 502", False, "answered 502"),
])
def test_a_page_passes_when_both_lcp_and_its_load_event_are_under_the_target_at_p95(found, ok, evidence):
    [item] = browser_items("web1", {"/prayers/1": found}, 2.0, Path("/repo/.vigil/audit/staging"))
    assert (item.name, item.host, item.ok) == ("page load in a browser (/prayers/1)", "web1", ok)
    assert evidence in item.evidence
    assert ("screenshot /repo/.vigil/audit/staging/web1-prayers-1.png" in item.evidence) == (not isinstance(found, str))
