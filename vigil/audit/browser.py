"""Page loads in a real browser, for audit.performance: Debian's Chromium, headless, driven by Playwright's
driver (the system's browser: nothing is downloaded at run time).

Each load is a first visit (a fresh browser context: no cache, no cookies): the page is opened, its load
event awaited, then the page itself says what it measured: Largest Contentful Paint, the load event's end
and the bytes it transferred (the document and every resource). Loads of a page are sequential; p50 and
p95 of each figure are judged against the 2 s target. The last load of each page leaves a screenshot.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from vigil.audit.checklist import Item, percentile
from vigil.core.errors import ConfigError
from vigil.core.paths import rel

CHROMIUM = ("chromium", "chromium-browser")
# A path on the site, as app_pages and --pages give it: no scheme, no host, nothing a shell or URL would read
# otherwise.
PAGE = re.compile(r"/[A-Za-z0-9._~/%=&?-]{0,200}")
LOAD_TIMEOUT_MS = 30_000
# Before any of the page's own scripts: what its Content-Security-Policy blocked, as the browser reports it.
WATCH_VIOLATIONS = """window.__vigilViolations = [];
document.addEventListener("securitypolicyviolation", (event) =>
  window.__vigilViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "an inline script"}`));"""
# Run in the page after its load event. LCP entries are delivered to a buffered observer in a task of their
# own, so the page is given two frames to hand them over.
MEASURE = """async () => {
  const paints = [];
  new PerformanceObserver((list) => paints.push(...list.getEntries()))
    .observe({ type: "largest-contentful-paint", buffered: true });
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(resolve, 50))));
  const navigation = performance.getEntriesByType("navigation")[0];
  const resources = performance.getEntriesByType("resource");
  return {
    lcp: paints.length ? paints[paints.length - 1].startTime : null,
    load: navigation ? navigation.loadEventEnd : null,
    bytes: (navigation ? navigation.transferSize : 0) + resources.reduce((sum, r) => sum + (r.transferSize || 0), 0),
    text: document.body ? document.body.innerText.trim().length : 0,
    violations: window.__vigilViolations || [],
  };
}"""


@dataclass(frozen=True)
class BrowserLoad:
    lcp: float | None  # seconds from navigation start to the largest contentful paint; None if nothing painted
    load: float  # seconds from navigation start to the load event's end
    bytes: int  # transferred: the document and every resource
    # What a visitor is left with once the page's scripts ran: characters of text (0: an empty page), and what
    # its Content-Security-Policy blocked.
    text: int = 1
    violations: tuple[str, ...] = ()


def chromium() -> str:
    """The system's Chromium (Debian's `chromium`)."""
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError("audit.performance loads pages in Chromium: install Debian's package (apt-get install "
                      "chromium; scripts/bootstrap does)")


def checked_pages(pages, where: str) -> list[str]:
    if isinstance(pages, str):
        pages = [page.strip() for page in pages.split(",") if page.strip()]
    if not isinstance(pages, list) or not pages:
        raise ConfigError(f"{where}: expected a list of paths like /prayers/1")
    for page in pages:
        if not isinstance(page, str) or not PAGE.fullmatch(page):
            raise ConfigError(f"{where}: {page!r} is not a path on the site like /prayers/1")
    return pages


def screenshot_name(host: str, page: str) -> str:
    """web1-home.png, web1-prayers-1.png: one file per host and page."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", page.split("?", 1)[0]).strip("-") or "home"
    return f"{host}-{slug}.png"


def load_pages(origin: str, pages: list[str], count: int, trusted: bool, shots: Path, host: str,
               ) -> dict[str, list[BrowserLoad] | str]:
    """`count` first visits of each page of the site at `origin` (https://name); page -> its loads, or why it
    could not be loaded. `trusted`: the site's certificate verifies for this machine (False in the sandbox,
    whose private CA Chromium does not know: its TLS is then not checked here, which audit.security does)."""
    # Playwright on first use: every task imports this module's package, few drive a browser (CLI start-up).
    from playwright.sync_api import Error, sync_playwright  # noqa: PLC0415

    found: dict[str, list[BrowserLoad] | str] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), headless=True)
        try:
            for page_path in pages:
                loads: list[BrowserLoad] = []
                try:
                    for number in range(count):
                        context = browser.new_context(ignore_https_errors=not trusted,
                                                      viewport={"width": 1280, "height": 800})
                        context.add_init_script(WATCH_VIOLATIONS)
                        try:
                            page = context.new_page()
                            answer = page.goto(origin + page_path, wait_until="load", timeout=LOAD_TIMEOUT_MS)
                            if answer is None or answer.status >= 400:
                                raise Error(f"answered {answer.status if answer else 'nothing'}")
                            measured = page.evaluate(MEASURE)
                            loads.append(BrowserLoad(
                                None if measured["lcp"] is None else measured["lcp"] / 1000,
                                (measured["load"] or 0) / 1000, int(measured["bytes"] or 0),
                                int(measured["text"] or 0), tuple(measured["violations"] or ())))
                            if number == count - 1:
                                page.screenshot(path=str(shots / screenshot_name(host, page_path)), full_page=True)
                        finally:
                            context.close()
                    found[page_path] = loads
                except Error as error:
                    found[page_path] = str(error).splitlines()[0][:200]
        finally:
            browser.close()
    return found


def browser_items(host: str, found: dict[str, list[BrowserLoad] | str], target: float,
                  shots: Path | None = None) -> list[Item]:
    """One item a page: it passes when the p95 of both LCP and the load event is under `target`; its evidence
    names the screenshot in `shots`."""
    items = []
    for page, loads in found.items():
        name = f"page load in a browser ({page})"
        if isinstance(loads, str) or not loads:
            items.append(Item(name, host, False, loads or "no load measured"))
            continue
        lcp = [load.lcp for load in loads if load.lcp is not None]
        load = [load.load for load in loads]
        kib = [load.bytes / 1024 for load in loads]
        worst = max(percentile(load, 0.95), percentile(lcp, 0.95) if lcp else 0)
        empty = sum(1 for one in loads if one.text == 0)
        blocked = sorted({violation for one in loads for violation in one.violations})
        ok = bool(lcp) and worst < target and not empty and not blocked
        evidence = (f"{len(loads)} first visits in Chromium: LCP p50 {fmt(lcp, 0.5)}, p95 {fmt(lcp, 0.95)}; load "
                    f"event p50 {fmt(load, 0.5)}, p95 {fmt(load, 0.95)}; transferred p50 "
                    f"{percentile(kib, 0.5):.1f} KiB, p95 {percentile(kib, 0.95):.1f} KiB (target {target:.0f} s)")
        if not lcp:
            evidence += "; nothing contentful was painted"
        if empty:
            evidence += f"; EMPTY after its scripts ran in {empty} of {len(loads)} loads"
        if blocked:
            evidence += f"; its Content-Security-Policy blocked: {'; '.join(blocked[:3])}"
        if shots is not None:
            evidence += f"; screenshot {rel(shots / screenshot_name(host, page))}"
        items.append(Item(name, host, ok, evidence))
    return items


def fmt(values: list[float], fraction: float) -> str:
    return f"{percentile(values, fraction) * 1000:.0f} ms" if values else "none"
