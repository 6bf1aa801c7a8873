"""Find documents under the user's paths and extract their text.

Formats: plain text and source code (any file that is not binary), Markdown, reStructuredText,
HTML (the standard library's HTML parser, scripts and styles dropped), PDF (pypdf, page by page),
DOCX (its XML read directly). Hidden and VCS folders are skipped; binaries, empty, unreadable,
oversized and broken files are reported with a reason instead of crashing the run.
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

MAX_FILE_BYTES = 50 * 1024 * 1024
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".mypy_cache"}
BINARY_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z",
    ".tar", ".so", ".dll", ".dylib", ".exe", ".bin", ".o", ".a", ".pyc", ".whl", ".gguf", ".usearch",
    ".npy", ".npz", ".mp3", ".mp4", ".wav", ".ogg", ".mov", ".avi", ".woff", ".woff2", ".ttf", ".otf",
    ".sqlite", ".db", ".pkl", ".pt", ".safetensors", ".jar", ".class", ".iso", ".dmg",
}


@dataclass
class ExtractedText:
    text: str
    pages: list[int] = field(default_factory=list)  # char offset where each page starts (PDF)
    note: str = ""  # e.g. "decoded as cp1252"


class SkipFile(Exception):
    """A file we do not index; the message is the reason shown in the report."""


def _resolved(path: Path) -> Path:
    """The real path; a symlink loop or a vanished link stays as it is (the indexer's stat then says why)."""
    try:
        real = path.resolve()
    except (RuntimeError, OSError):  # RuntimeError: "Symlink loop" before Python 3.13
        return path.absolute()
    return real if real.exists() else path.absolute()


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files under the given paths (files given directly are taken as they are), sorted, no hidden/VCS dirs.
    Entries that cannot be followed (symlink loops, dangling links) are yielded too, so the caller
    reports them as skipped instead of losing them silently."""
    for root in paths:
        root = Path(root).expanduser()
        if not root.is_dir():
            yield _resolved(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
            for name in sorted(filenames):
                if not name.startswith("."):
                    yield _resolved(Path(dirpath) / name)


def _decode(data: bytes) -> tuple[str, str]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        pass
    for encoding in ("utf-16",) if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ():
        try:
            return data.decode(encoding), f"decoded as {encoding}"
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("cp1252"), "decoded as cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "decoded as latin-1"


class _HTMLText(HTMLParser):
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section", "article",
             "header", "footer", "table", "ul", "ol", "blockquote", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "noscript", "template"):
            self._skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "noscript", "template"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        lines = [" ".join(line.split()) for line in "".join(self.parts).splitlines()]
        out: list[str] = []
        for line in lines:  # collapse runs of blank lines
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out).strip()


def _html(data: bytes) -> ExtractedText:
    text, note = _decode(data)
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    return ExtractedText(parser.text(), note=note)


def _pdf(path: Path) -> ExtractedText:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise SkipFile("encrypted PDF")
        parts, pages, offset = [], [], 0
        for page in reader.pages:
            pages.append(offset)
            chunk = (page.extract_text() or "").strip() + "\n\n"
            parts.append(chunk)
            offset += len(chunk)
    except SkipFile:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise SkipFile(f"broken PDF ({type(exc).__name__}: {str(exc)[:80]})") from None
    return ExtractedText("".join(parts).strip(), pages=pages)


def _docx(path: Path) -> ExtractedText:
    ns = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
    try:
        with zipfile.ZipFile(path) as zf:
            root = ElementTree.fromstring(zf.read("word/document.xml"))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as exc:
        raise SkipFile(f"broken DOCX ({type(exc).__name__})") from None
    paragraphs = ["".join(t.text or "" for t in p.iter(f"{ns}t")) for p in root.iter(f"{ns}p")]
    return ExtractedText("\n".join(paragraphs).strip())


def extract_text(path: Path, max_bytes: int = MAX_FILE_BYTES) -> ExtractedText:
    """Text of one file, or SkipFile with the reason."""
    suffix = path.suffix.lower()
    if suffix in BINARY_SUFFIXES:
        raise SkipFile(f"binary file type ({suffix})")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SkipFile(f"unreadable ({exc.strerror or exc})") from None
    if size == 0:
        raise SkipFile("empty file")
    if size > max_bytes:
        raise SkipFile(f"too large ({size / 1e6:.0f} MB > {max_bytes / 1e6:.0f} MB limit)")
    if suffix == ".pdf":
        result = _pdf(path)
    elif suffix == ".docx":
        result = _docx(path)
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SkipFile(f"unreadable ({exc.strerror or exc})") from None
        if b"\x00" in data[:8192] and not data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise SkipFile("binary content")
        if suffix in (".html", ".htm", ".xhtml"):
            result = _html(data)
        else:
            text, note = _decode(data)
            result = ExtractedText(text, note=note)
    if not result.text.strip():
        raise SkipFile("no text")
    return result
