"""Static files: fingerprinted names cached for a year, plain names revalidated, gzip and brotli
as the browser accepts, and what a first visit transfers for styles and scripts (portal/assets.py).
"""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import brotli
import pytest
from flask import Flask
from flask.testing import FlaskClient

from portal import assets
from portal.assets import IMMUTABLE, STATIC_DIR, build, fingerprint, hashed_name

ROOT = Path(__file__).resolve().parent.parent.parent
FILES = ["css/portal.css", "js/htmx.min.js", "js/portal.js", "favicon.svg"]
# What a first visit may transfer for the page's styles and scripts, compressed.
FIRST_VISIT_BUDGET = 30_000


def _linked(page: str) -> list[str]:
    return re.findall(r'(?:href|src)="(/static/[^"]+)"', page)


def _names(app: Flask) -> dict[str, str]:
    names: dict[str, str] = dict(app.extensions["portal.assets"].names)
    return names


def test_every_page_links_the_fingerprinted_names(app: Flask, client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    names = _names(app)
    assert sorted(_linked(page)) == sorted(f"/static/{names[name]}" for name in FILES)
    for name in FILES:
        content = (STATIC_DIR / name).read_bytes()
        assert names[name] == hashed_name(name, content) != name


def test_a_template_cannot_link_a_file_that_is_not_there(app: Flask) -> None:
    with app.test_request_context(), pytest.raises(KeyError):
        assets.static_url("css/nothing.css")


def test_a_fingerprinted_name_is_cached_for_a_year(app: Flask, client: FlaskClient) -> None:
    for name, hashed in _names(app).items():
        response = client.get(f"/static/{hashed}", headers={"Accept-Encoding": "identity"})
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == IMMUTABLE
        assert IMMUTABLE == "public, max-age=31536000, immutable"
        assert response.data == (STATIC_DIR / name).read_bytes()
        # The security headers of every answer, here too; no header opens it to other sites.
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "Access-Control-Allow-Origin" not in response.headers
        response.close()


def test_a_plain_name_still_answers_and_is_revalidated(client: FlaskClient) -> None:
    for name in FILES:
        response = client.get(f"/static/{name}", headers={"Accept-Encoding": "identity"})
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.data == (STATIC_DIR / name).read_bytes()
        etag = response.headers["ETag"]
        response.close()
        again = client.get(f"/static/{name}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.data == b""


def test_the_vendored_htmx_is_the_one_the_architecture_names(app: Flask) -> None:
    """The fingerprint is a name only: the file served is htmx's own, byte for byte."""
    digest = re.search(r"sha256\s+`([0-9a-f]{64})`", (ROOT / "docs/architecture.md").read_text())
    assert digest is not None
    root = app.extensions["portal.assets"].root
    hashed = _names(app)["js/htmx.min.js"]
    assert hashlib.sha256((root / hashed).read_bytes()).hexdigest() == digest.group(1)
    assert hashed == f"js/htmx.min.{digest.group(1)[:12]}.js"


@pytest.mark.parametrize(
    ("accept", "encoding", "decompress"),
    [
        ("gzip, deflate, br", "br", brotli.decompress),
        ("br", "br", brotli.decompress),
        ("gzip", "gzip", gzip.decompress),
    ],
)
def test_compressed_as_the_browser_accepts(
    app: Flask, client: FlaskClient, accept: str, encoding: str, decompress: object
) -> None:
    assert callable(decompress)
    for name, hashed in _names(app).items():
        for served in (name, hashed):
            response = client.get(f"/static/{served}", headers={"Accept-Encoding": accept})
            original = (STATIC_DIR / name).read_bytes()
            assert response.headers["Content-Encoding"] == encoding
            assert "Accept-Encoding" in response.headers["Vary"]
            assert int(response.headers["Content-Length"]) == len(response.data) < len(original)
            assert decompress(response.data) == original
            response.close()


def test_what_a_first_visit_transfers_for_styles_and_scripts(client: FlaskClient) -> None:
    """Before fingerprinting and compression a page's CSS and JS came to 89,687 bytes."""
    page = client.get("/login").get_data(as_text=True)
    linked = [url for url in _linked(page) if url.endswith((".css", ".js"))]
    assert len(linked) == 3
    for accept in ("br", "gzip"):
        sizes = []
        for url in linked:
            response = client.get(url, headers={"Accept-Encoding": accept})
            assert response.headers["Content-Encoding"] == accept
            sizes.append(len(response.data))
            response.close()
        assert sum(sizes) <= FIRST_VISIT_BUDGET, (accept, sizes)


def test_an_unknown_static_name_gets_the_404_page(client: FlaskClient) -> None:
    response = client.get("/static/css/portal.000000000000.css")
    assert response.status_code == 404 and response.mimetype == "text/html"


def test_a_changed_file_gets_a_new_name() -> None:
    one = hashed_name("css/portal.css", b"body { color: red }")
    assert one == f"css/portal.{fingerprint(b'body { color: red }')}.css"
    assert re.fullmatch(r"css/portal\.[0-9a-f]{12}\.css", one)
    assert hashed_name("css/portal.css", b"body { color: red }") == one  # the same every time
    assert hashed_name("css/portal.css", b"body { color: blue }") != one
    assert hashed_name("js/htmx.min.js", b"x") == f"js/htmx.min.{fingerprint(b'x')}.js"
    assert hashed_name("LICENSE", b"x") == f"LICENSE.{fingerprint(b'x')}"
    assert hashed_name(".well", b"x") == f".well.{fingerprint(b'x')}"


def test_a_build_is_a_tree_of_its_own_per_content(tmp_path: Path) -> None:
    source, target = tmp_path / "static", tmp_path / "build"
    (source / "css").mkdir(parents=True)
    (source / "css" / "site.css").write_text("body { color: red }\n" * 50)
    (source / "logo.png").write_bytes(b"\x89PNG not compressed again")
    first = build(source, target)
    hashed = first.names["css/site.css"]
    assert first.root.parent == target
    for served in ("css/site.css", hashed):
        assert (first.root / served).read_text() == "body { color: red }\n" * 50
        assert brotli.decompress((first.root / f"{served}.br").read_bytes()).startswith(b"body")
        assert gzip.decompress((first.root / f"{served}.gz").read_bytes()).startswith(b"body")
    assert not (first.root / "logo.png.gz").exists()  # already compressed formats are left alone
    assert [p.name for p in target.iterdir()] == [first.root.name]  # nothing half-built left

    (source / "css" / "site.css").write_text("body { color: blue }\n" * 50)
    assert build(source, target) is first  # once per process: a change shows on restart
    build.cache_clear()
    second = build(source, target)
    assert second.names["css/site.css"] != hashed and second.root != first.root
    assert (first.root / hashed).exists()  # pages already out still find the old file

    # Another process finds the tree made and uses it as it is.
    (source / "css" / "site.css").write_text("body { color: red }\n" * 50)
    build.cache_clear()
    again = build(source, target)
    assert again == first


def test_a_tree_another_process_published_first_is_kept(tmp_path: Path) -> None:
    root, staging = tmp_path / "tree", tmp_path / "staging"
    (root / "css").mkdir(parents=True)
    (staging / "css").mkdir(parents=True)
    assets._publish(staging, root)  # the same tree is there already: fine
    assert root.is_dir() and staging.is_dir()
    with pytest.raises(OSError):
        assets._publish(staging, tmp_path / "no" / "such" / "folder")
