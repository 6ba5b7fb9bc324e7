"""``debian-descriptions``: translated Debian package descriptions (translation pairs).

The Debian Description Translation Project (DDTP) translates package descriptions; the archive publishes them as
``Translation-<lang>`` files, each entry keyed by ``Description-md5``, the checksum of the English original, so
an English and a German entry with the same checksum are translations of each other. Units: the one-line
synopses (``line``), the paragraphs of the long descriptions (``paragraph``: paired by position, only where
both have the same number of paragraphs), or both (``both``, the default).
"""

from __future__ import annotations

from lmlab.data.sources.apt import LANGUAGES, Archive, Description, translations
from lmlab.data.sources.dataset import Raw, Source
from lmlab.data.sources.handbook import parse_pair
from lmlab.errors import DataError

UNITS = ("line", "paragraph", "both")
LICENCE = {"name": "Debian package descriptions, DDTP; licences of the respective packages",
           "text": "Package descriptions are part of each package's debian/control and are distributed under the "
                   "licence of the respective package; their translations are contributed through the Debian "
                   "Description Translation Project (https://ddtp.debian.org) under the same terms."}


def pairs(src: dict[str, Description], tgt: dict[str, Description], unit: str = "both") -> tuple[Raw, dict]:
    """Pair two ``Description-md5`` -> description maps (see :func:`lmlab.data.sources.apt.translations`).
    Returns the raw pairs (in ``src`` order) and counts of descriptions: in each side and matched."""
    if unit not in UNITS:
        raise DataError(f"--unit must be one of {', '.join(UNITS)} (got {unit!r})")
    raw = Raw([])
    matched = 0
    for md5, a in src.items():
        b = tgt.get(md5)
        if b is None:
            continue
        matched += 1
        if unit in ("line", "both"):
            raw.examples.append({"source": a.synopsis, "target": b.synopsis})
        if unit in ("paragraph", "both"):
            if len(a.paragraphs) == len(b.paragraphs):
                raw.examples += [{"source": x, "target": y} for x, y in zip(a.paragraphs, b.paragraphs, strict=True)]
            else:
                raw.dropped["paragraph_count_differs"] += len(a.paragraphs)
    return raw, {"source": len(src), "target": len(tgt), "matched": matched}


def collect(archive: Archive, pair: str = "de-en", unit: str = "both") -> tuple[Raw, dict]:
    src, tgt = parse_pair(pair)
    if "en" not in (src, tgt) or not {src, tgt} <= set(LANGUAGES):
        others = [lang for lang in LANGUAGES if lang != "en"]
        raise DataError(f"debian-descriptions: --pair must pair en with one of {', '.join(others)} (e.g. "
                        f"{others[0]}-en or en-{others[0]}), got {pair!r}")
    if unit not in UNITS:
        raise DataError(f"--unit must be one of {', '.join(UNITS)} (got {unit!r})")
    maps = {lang: translations(archive.index(f"Translation-{lang}"), lang) for lang in (src, tgt)}
    raw, matched = pairs(maps[src], maps[tgt], unit)
    raw.notes.append(f"descriptions: {matched['source']} in Translation-{src}, {matched['target']} in "
                     f"Translation-{tgt}, {matched['matched']} matched by Description-md5")
    what = {"line": "one-line synopses", "paragraph": "long-description paragraphs",
            "both": "one-line synopses and long-description paragraphs"}[unit]
    return raw, {
        "description": f"Debian package descriptions and their DDTP translations, {src} -> {tgt}: {what}.",
        "languages": {"source": src, "target": tgt},
        "unit": unit,
        "descriptions": matched,
        "method": f"Translation-{src} and Translation-{tgt} of the main component, entries matched by "
                  "Description-md5 (the checksum of the English original). A synopsis pairs with its translation; "
                  "long descriptions are split into paragraphs at ' .' lines (lines of a paragraph joined by "
                  "spaces, so lists and verbatim lines are flattened) and paired by position where both have the "
                  "same number of paragraphs. Whitespace normalised; untranslated (identical) pairs and exact "
                  "duplicates (the many packages that share a description) dropped.",
        "licence": LICENCE,
    }


SOURCE = Source(
    name="debian-descriptions", kind="seq2seq", collect=collect, options={"pair": "de-en", "unit": "both"},
    identical_reason="untranslated",
    summary="translation: Debian package descriptions and their DDTP translations, matched by Description-md5 "
            "(--pair de-en, fr-en, en-de, en-fr; --unit line|paragraph|both)")
