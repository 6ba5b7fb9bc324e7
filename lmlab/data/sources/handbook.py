"""``debian-handbook``: parallel paragraphs of the Debian Administrator's Handbook (translation pairs).

The Debian package ``debian-handbook`` ships the book as HTML, one directory per language
(``usr/share/doc/debian-handbook/html/en-US/``, ``de-DE/``, ``fr-FR/``, ...), the same pages in each. A page's
text units are its paragraphs (``<div class="para">``) and titles (``<h1>``..``<h6>`` and ``<p class="title">``
of sections, examples, figures and sidebars), in document order. Translations keep the structure, so units align
by position; a page is used only when both languages have it and its sequence of unit kinds (para/title) is the
same in both, and skipped (and counted) otherwise.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from lmlab.data.sources.apt import Archive, parse_stanzas
from lmlab.data.sources.dataset import Raw, Source
from lmlab.errors import DataError

PACKAGE = "debian-handbook"
HTML = Path("usr/share/doc/debian-handbook/html")
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_TITLES = {"h1", "h2", "h3", "h4", "h5", "h6"}


class _Units(HTMLParser):
    """Collects (kind, text) for each paragraph and title. A unit nested in another becomes a unit of its own
    and its text is left out of the outer one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # open elements: (tag, opens a unit)
        self.open: list[tuple[str, list[str], int]] = []  # units being read: (kind, text pieces, slot)
        self.units: list[tuple[str, str] | None] = []  # listed where they start, filled in where they end

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        classes = (dict(attrs).get("class") or "").split()
        kind = ("para" if tag == "div" and "para" in classes else
                "title" if "title" in classes and (tag in _TITLES or tag == "p") else None)
        self.stack.append((tag, kind is not None))
        if kind:
            self.open.append((kind, [], len(self.units)))
            self.units.append(None)

    def handle_endtag(self, tag: str) -> None:
        if not any(t == tag for t, _ in self.stack):
            return  # a stray end tag
        while self.stack:  # also closes elements left open inside this one
            t, is_unit = self.stack.pop()
            if is_unit:
                kind, pieces, slot = self.open.pop()
                self.units[slot] = (kind, " ".join("".join(pieces).split()))
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.open:
            self.open[-1][1].append(data)

    def result(self) -> list[tuple[str, str]]:
        self.close()
        return [u for u in self.units if u is not None]


def page_units(html: str) -> list[tuple[str, str]]:
    """The (kind, text) units of one HTML page, in document order; kind is "para" or "title"."""
    p = _Units()
    p.feed(html)
    return p.result()


def align(src_dir: Path, tgt_dir: Path) -> tuple[Raw, dict]:
    """Pair the units of the pages of two language directories by position. Returns the raw pairs and page
    counts: {"pages": n, "aligned": n, "missing": [pages absent from one side], "unaligned": [pages whose unit
    sequences differ]}. Units of skipped pages are counted as dropped ("page_missing", "page_unaligned")."""
    raw = Raw([])
    names = sorted({p.name for p in src_dir.glob("*.html")} | {p.name for p in tgt_dir.glob("*.html")})
    pages = {"pages": len(names), "aligned": 0, "missing": [], "unaligned": []}
    for name in names:
        a, b = src_dir / name, tgt_dir / name
        if not (a.exists() and b.exists()):
            pages["missing"].append(name)
            raw.dropped["page_missing"] += len(page_units((a if a.exists() else b).read_text("utf-8")))
            continue
        ua, ub = page_units(a.read_text("utf-8")), page_units(b.read_text("utf-8"))
        if [k for k, _ in ua] != [k for k, _ in ub]:
            pages["unaligned"].append(name)
            raw.dropped["page_unaligned"] += len(ua)
            continue
        pages["aligned"] += 1
        raw.examples += [{"source": x, "target": y} for (_, x), (_, y) in zip(ua, ub, strict=True)]
    return raw, pages


def language_dir(html_root: Path, lang: str) -> Path:
    """The directory of ``lang`` ("de", "fr", "zh-CN", "pt_BR", ...) under the package's ``html/``."""
    dirs = sorted(p.name for p in html_root.iterdir() if p.is_dir())
    want = lang.replace("_", "-").lower()
    hits = [d for d in dirs if d.lower() == want] or [d for d in dirs if d.lower().split("-")[0] == want]
    if len(hits) != 1:
        codes = sorted({d.split("-")[0] for d in dirs} | {d for d in dirs if d.startswith(("zh", "pt"))})
        raise DataError(f"debian-handbook has no single language {lang!r}; it has: {', '.join(codes)}")
    return html_root / hits[0]


def parse_pair(pair: str) -> tuple[str, str]:
    """``"de-en"`` -> ("de", "en"): source language, target language (regions with "_": ``zh_CN-en``)."""
    parts = pair.split("-")
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise DataError(f"--pair must be SOURCE-TARGET with two different languages, such as de-en or en-fr "
                        f"(got {pair!r})")
    return parts[0], parts[1]


def _licence(root: Path) -> dict:
    text = ""
    copyright_file = root / "usr/share/doc/debian-handbook/copyright"
    if copyright_file.exists():
        for st in parse_stanzas(copyright_file.read_text("utf-8")):
            if st.get("Files", "").strip() == "*":
                text = f"Copyright: {st.get('Copyright', '')}\nLicense: {st.get('License', '')}"
                break
    return {"name": "GPL-2.0+ or CC-BY-SA-3.0",
            "text": (text + "\n\n" if text else "") + "The Debian Administrator's Handbook, by Raphaël Hertzog and "
            "Roland Mas, and its translations, may be used under the GNU General Public License version 2 or "
            "later, or the Creative Commons Attribution-ShareAlike 3.0 Unported licence. The full terms are in "
            "/usr/share/doc/debian-handbook/copyright of the Debian package debian-handbook."}


def collect(archive: Archive, pair: str = "de-en") -> tuple[Raw, dict]:
    src, tgt = parse_pair(pair)
    root = archive.package(PACKAGE)
    html = root / HTML
    if not html.is_dir():
        raise DataError(f"the Debian package {PACKAGE} has no {HTML} (in {root})")
    src_dir, tgt_dir = language_dir(html, src), language_dir(html, tgt)
    raw, pages = align(src_dir, tgt_dir)
    raw.notes.append(f"pages: {pages['pages']}, aligned {pages['aligned']}, skipped because missing in one "
                     f"language {len(pages['missing'])}, skipped because their paragraphs/titles do not align "
                     f"{len(pages['unaligned'])}" + (f" ({', '.join(pages['unaligned'])})" if pages["unaligned"]
                                                      else ""))
    return raw, {
        "description": f"Parallel paragraphs and titles of the Debian Administrator's Handbook, {src} -> {tgt}: "
                       "human translations of technical prose (system administration).",
        "languages": {"source": src, "target": tgt},
        "pages": pages,
        "method": f"The package's HTML (`html/{src_dir.name}/` and `html/{tgt_dir.name}/`) read page by page: "
                  "paragraphs (`<div class=\"para\">`) and titles (`<h1>`-`<h6>`, `<p class=\"title\">`) in "
                  "document order, paired by position within each page when both pages have the same sequence of "
                  "paragraphs and titles; pages that do not are skipped. Whitespace normalised; pairs identical on "
                  "both sides (untranslated: the book falls back to English where a translation is missing; "
                  "also commands and names) dropped; exact duplicates dropped.",
        "licence": _licence(root),
    }


SOURCE = Source(
    name="debian-handbook", kind="seq2seq", collect=collect, options={"pair": "de-en"}, valid=0.05, test=0.05,
    identical_reason="untranslated",
    summary="translation: the Debian Administrator's Handbook, paragraphs aligned by position (--pair de-en, "
            "fr-en, en-de, ...)")
