"""``debian-summaries``: a Debian package's long description -> its one-line synopsis (summarization pairs).

From the English ``Translation-en`` of the main component, which holds every package's description: the long
description (paragraphs, one per line) is the source, the synopsis the target, headline style.
"""

from __future__ import annotations

from lmlab.data.sources.apt import Archive, Description, translations
from lmlab.data.sources.dataset import Raw, Source
from lmlab.data.sources.descriptions import LICENCE


def pairs(descriptions: dict[str, Description]) -> Raw:
    """(long description -> synopsis) pairs, split-grouped by the description's first paragraph: packages of one
    family (``foo``, ``foo-data``, ``foo-doc``) often share it, and should not straddle train and test."""
    raw = Raw([])
    for d in descriptions.values():
        if not d.paragraphs:
            raw.dropped["no_long_description"] += 1
            continue
        raw.examples.append({"source": d.long, "target": d.synopsis, "group": d.paragraphs[0]})
    return raw


def collect(archive: Archive) -> tuple[Raw, dict]:
    descriptions = translations(archive.index("Translation-en"), "en")
    raw = pairs(descriptions)
    raw.notes.append(f"descriptions: {len(descriptions)} distinct (by Description-md5) in Translation-en")
    return raw, {
        "description": "Debian package descriptions: the long description (source) and the package's one-line "
                       "synopsis (target), English, headline-style summarization.",
        "method": "Translation-en of the main component, one entry per distinct Description-md5. Long descriptions "
                  "are split into paragraphs at ' .' lines, the lines of a paragraph joined by spaces (lists and "
                  "verbatim lines flattened), paragraphs separated by a newline. Whitespace normalised; "
                  "descriptions without a long part and exact duplicates dropped, and so are all pairs of a long "
                  "description that several packages share with different synopses (ambiguous_source: mostly "
                  "boilerplate such as the Node.js module template).",
        "licence": LICENCE,
    }


SOURCE = Source(name="debian-summaries", kind="seq2seq", collect=collect, drop_ambiguous=True,
                summary="summarization: a Debian package's long description -> its one-line synopsis (English)")
