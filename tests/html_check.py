"""Checking HTML files with Python's html.parser (no headless browser is installed here): imported by tests."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

VOID = {"meta", "img", "br", "hr", "link", "input"}


class StrictHTML(HTMLParser):
    """Python's html.parser, checking what it does not: every element closed, properly nested, a doctype."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.links, self.doctype = [], [], [], None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[key] for key in ("src", "href") if key in attrs]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unexpected </{tag}>")


def check_html(path: Path) -> list[str]:
    """Parses ``path`` strictly and returns its links; fails on malformed markup or a link to a missing file."""
    parser = StrictHTML()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.doctype == "DOCTYPE html" and not parser.errors and not parser.stack, (parser.errors, parser.stack)
    for link in parser.links:
        if not link.startswith("#"):
            assert "://" not in link and (path.parent / unquote(link)).is_file(), link  # opens from disk
    return parser.links
