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
