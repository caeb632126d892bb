"""A real headless Chromium (Debian's ``chromium``, installed by localcluster/setup.sh) for the page tests, and a
small reader of the DOM it dumps.

Chromium is driven by its command line only: ``--dump-dom`` prints the DOM once the page has loaded (the page's
script draws synchronously, and its state comes from the URL fragment), ``--screenshot`` writes a PNG. Console
messages (script errors, Content-Security-Policy violations) go to stderr with ``--enable-logging=stderr``.
A missing Chromium fails the test: CI installs it, and a skipped browser test would pass having tested nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: localcluster/setup.sh installs it (apt-get install chromium)")
    return found


@dataclass
class Loaded:
    dom: str
    console: list[str]  # Chromium's CONSOLE log lines: anything the page logged, errors included


def _run(url: str, profile: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    argv = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
            "--disable-background-networking", "--disable-sync", "--enable-logging=stderr", "--v=0",
            f"--user-data-dir={profile}", *flags, url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def load(page: Path, fragment: str, tmp_path: Path) -> Loaded:
    """The DOM of ``file://PAGE#FRAGMENT`` after load, and the console lines logged meanwhile."""
    proc = _run(f"{page.resolve().as_uri()}#{fragment}", tmp_path / "chromium-profile", "--dump-dom")
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return Loaded(proc.stdout, console)


def screenshot(page: Path, fragment: str, png: Path, size: str = "1400,1000") -> bytes:
    _run(f"{page.resolve().as_uri()}#{fragment}", png.parent / "chromium-profile-shot", f"--screenshot={png}",
         f"--window-size={size}", "--hide-scrollbars")
    return png.read_bytes()


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list[Node] = field(default_factory=list)

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        out = []
        for child in self.children:
            if (tag is None or child.tag == tag) and all(child.attrs.get(k.replace("_", "-")) == v
                                                         for k, v in attrs.items()):
                out.append(child)
            out.extend(child.find_all(tag, **attrs))
        return out

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag}> with {attrs}"
        return found[0]

    @property
    def all_text(self) -> str:
        return self.text + "".join(c.all_text for c in self.children)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


_VOID = {"meta", "link", "br", "hr", "img", "input", "col", "area", "base", "wbr", "source", "track", "embed"}


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(Node("#text", {}, data))


def parse(dom: str) -> Node:
    builder = _Builder()
    builder.feed(dom)
    return builder.root


def cells(root: Node) -> dict[tuple[str, str], Node]:
    """The workload matrix: (row header text, column title without "to ") -> its cell."""
    table = root.find("table", id="matrix")
    cols = [th.attrs["title"].removeprefix("to ") for th in table.find("thead").find_all("th", **{"class": "col"})]
    out = {}
    for tr in table.find("tbody").find_all("tr"):
        row = tr.find("th").all_text
        for col, td in zip(cols, tr.find_all("td"), strict=True):
            out[(row, col)] = td
    return out
