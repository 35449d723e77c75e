"""Every catalog is complete, and keeps the English placeholders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from portal.i18n import SUPPORTED_LOCALES

ROOT = Path(__file__).resolve().parents[2] / "translations"
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


@pytest.mark.parametrize("language", [code for code in SUPPORTED_LOCALES if code != "en"])
def test_catalog_is_complete_and_keeps_placeholders(language: str) -> None:
    path = ROOT / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    with (ROOT / "messages.pot").open("rb") as handle:
        template = read_po(handle)
    wanted = {m.id if isinstance(m.id, str) else m.id[0] for m in template if m.id}
    have = {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}
    assert wanted <= have, f"{language} lacks: {sorted(wanted - have)[:5]}"
    for message in catalog:
        if not message.id:
            continue
        assert not message.fuzzy, message.id
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        strings = [message.string] if isinstance(message.string, str) else list(message.string)
        assert all(strings), f"{language}: untranslated {ids[0]!r}"
        expected = set(PLACEHOLDER.findall(ids[-1]))
        for text in strings:
            assert set(PLACEHOLDER.findall(text)) <= expected | set(PLACEHOLDER.findall(ids[0]))
            if isinstance(message.id, str):
                assert set(PLACEHOLDER.findall(text)) == expected, (language, ids[0], text)


def test_every_python_message_reaches_the_template() -> None:
    """A message marked in any module (the portal's or a worker's) is in messages.pot.

    Extraction is configured by babel.cfg; a directory it forgets leaves its
    messages untranslated with nothing failing but the mail a German reader gets.
    """
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir

    repo = ROOT.parent
    keywords = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}
    marked: set[str] = set()
    for folder in ("portal", "workers"):
        for _, _, message, _, _ in extract_from_dir(
            repo / folder, method_map=[("**.py", "python")], keywords=keywords
        ):
            marked.add(message if isinstance(message, str) else message[0])
    with (ROOT / "messages.pot").open("rb") as handle:
        template = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(handle) if m.id}
    assert marked, "no marked messages found: the extraction itself is broken"
    assert marked <= template, f"not extracted: {sorted(marked - template)[:5]}"
