"""Static files: fingerprinted names cached for a year, sent gzip or brotli (WhiteNoise).

A template names a static file through `static_url("css/portal.css")`, which gives
`/static/css/portal.<fingerprint>.css`: the fingerprint is the first 12 hex digits of the file's
sha256, so a changed file gets a new name and a browser may keep the old one for good. The plain
name still answers, revalidated on every use (`no-cache`), as before.

Once per process (`build`), every file under portal/static/ is copied into
build/static/<tree>/ under its plain and its fingerprinted name, with the .br and .gz files that
WhiteNoise's Compressor makes beside each. <tree> is a fingerprint of all the files, and a tree is
made in a folder of its own and renamed into place whole, so processes starting side by side
(gunicorn workers) never see half of one and a tree already built is used as it is. WhiteNoise,
wrapped around the app, serves that tree before Flask sees the request: the fingerprinted names
with `Cache-Control: public, max-age=31536000, immutable`, the plain ones with `no-cache`, each
compressed as the browser accepts (brotli, else gzip, else as is). A name it does not know goes
on to Flask (its 404 page). build/ is not committed; `make clean` removes it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from wsgiref.headers import Headers

from flask import Flask, current_app
from whitenoise import WhiteNoise
from whitenoise.compress import Compressor

from portal.config import PROJECT_ROOT

STATIC_DIR = Path(__file__).resolve().parent / "static"
BUILD_DIR = PROJECT_ROOT / "build" / "static"
DIGITS = 12
ONE_YEAR = 365 * 24 * 60 * 60
IMMUTABLE = f"public, max-age={ONE_YEAR}, immutable"
REVALIDATE = "no-cache"


def fingerprint(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:DIGITS]


def hashed_name(name: str, content: bytes) -> str:
    """css/portal.css -> css/portal.<fingerprint>.css (a name without a suffix ends in it)."""
    folder, slash, file = name.rpartition("/")
    stem, dot, suffix = file.rpartition(".")
    mark = fingerprint(content)
    hashed = f"{stem}.{mark}.{suffix}" if dot and stem else f"{file}.{mark}"
    return f"{folder}{slash}{hashed}"


@dataclass(frozen=True)
class Assets:
    root: Path  # the built tree WhiteNoise serves
    names: Mapping[str, str]  # plain name -> fingerprinted name


def _publish(staging: Path, root: Path) -> None:
    """Rename a finished tree into place; another process may have put the same one there."""
    try:
        staging.rename(root)
    except OSError:
        if not root.is_dir():
            raise


@functools.cache
def build(source: Path = STATIC_DIR, target: Path = BUILD_DIR) -> Assets:
    """The fingerprinted names of the files under `source`, and their tree under `target`
    (made unless already there): once per process and folder."""
    paths = sorted(path for path in source.rglob("*") if path.is_file())
    files = {path.relative_to(source).as_posix(): path for path in paths}
    contents = {name: path.read_bytes() for name, path in files.items()}
    names = {name: hashed_name(name, content) for name, content in contents.items()}
    root = target / fingerprint("\n".join(sorted(names.values())).encode())
    if not root.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target))
        try:
            compressor = Compressor(quiet=True)
            for name, content in contents.items():
                stat = files[name].stat()
                hashed = staging / names[name]
                hashed.parent.mkdir(parents=True, exist_ok=True)
                hashed.write_bytes(content)
                os.utime(hashed, (stat.st_atime, stat.st_mtime))  # Last-Modified, ETag
                made = compressor.compress(str(hashed)) if compressor.should_compress(name) else []
                # The plain name: the same file and the same compressed ones, compressed once.
                plain = str(staging / name)
                for path in [str(hashed), *made]:
                    shutil.copy2(path, plain + path.removeprefix(str(hashed)))
            _publish(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Assets(root, names)


def static_url(name: str) -> str:
    """The URL of a static file by its plain name, fingerprinted: what templates link to. A
    name that is no file fails the page (KeyError), rather than link to nothing."""
    assets: Assets = current_app.extensions["portal.assets"]
    return f"{current_app.static_url_path}/{assets.names[name]}"


def init_app(app: Flask, headers: Mapping[str, str]) -> None:
    """Serve the built tree in front of the app, each answer carrying `headers` too (the
    security headers Flask's own answers get)."""
    assets = build()
    app.extensions["portal.assets"] = assets
    prefix = f"{app.static_url_path}/"
    immutable = {prefix + hashed for hashed in assets.names.values()}

    def add_headers(response_headers: Headers, _path: str, url: str) -> None:
        response_headers["Cache-Control"] = IMMUTABLE if url in immutable else REVALIDATE
        for name, value in headers.items():
            response_headers[name] = value

    app.wsgi_app = WhiteNoise(  # type: ignore[method-assign]
        app.wsgi_app,
        root=str(assets.root),
        prefix=prefix,
        max_age=None,
        allow_all_origins=False,
        add_headers_function=add_headers,
    )
