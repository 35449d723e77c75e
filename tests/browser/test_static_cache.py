"""A repeat visit asks the server for no style or script: Chromium keeps the fingerprinted files
(`immutable`) from the first visit, with its HTTP cache on as a person's browser has it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.browser.conftest import LiveServer

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


@contextmanager
def _paths_served(live: LiveServer) -> Iterator[list[str]]:
    """Every path the live server is asked for meanwhile, static files included (WhiteNoise
    answers those before Flask, so its after_request hooks never see them)."""
    app = live.app
    inner: WsgiApp = app.wsgi_app
    seen: list[str] = []

    def counting(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append(environ.get("PATH_INFO", ""))
        return inner(environ, start_response)

    app.wsgi_app = counting  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        app.wsgi_app = inner  # type: ignore[method-assign]


def _assets(paths: list[str]) -> list[str]:
    return [path for path in paths if path.endswith((".css", ".js"))]


def test_a_repeat_visit_loads_styles_and_scripts_from_the_cache(
    new_page: Any, live_server: LiveServer
) -> None:
    page = new_page()
    with _paths_served(live_server) as first:
        page.goto(f"{live_server.url}/login")
        page.wait_for_load_state("load")
    names = live_server.app.extensions["portal.assets"].names
    scripts_and_styles = ("css/portal.css", "js/htmx.min.js", "js/portal.js")
    # Each once, by its fingerprinted name.
    assert sorted(_assets(first)) == sorted(f"/static/{names[n]}" for n in scripts_and_styles)

    with _paths_served(live_server) as repeat:
        page.goto(f"{live_server.url}/password/forgot")  # another page: the same files
        page.wait_for_load_state("load")
        page.goto(f"{live_server.url}/login")
        page.wait_for_load_state("load")
    assert repeat.count("/login") == 1 and repeat.count("/password/forgot") == 1
    assert _assets(repeat) == []  # none asked for again, not even to revalidate
    assert page.evaluate("typeof htmx") == "object"  # and the scripts did run from the cache
    styles = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert styles not in ("", "rgba(0, 0, 0, 0)")  # the stylesheet applies
