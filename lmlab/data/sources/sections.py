"""``debian-sections``: a Debian package's description -> its archive section (text classification).

The ``Packages`` index of the main component (one architecture) gives each package's ``Section`` (``libs``,
``python``, ``devel``, ``net``, ...) and ``Description-md5``; ``Translation-en`` gives the full English
description for that checksum. The text is the synopsis, a newline and the long description. Many classes,
unbalanced: classes with fewer than ``min_count`` examples are dropped (and listed in the manifest).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from lmlab.data.sources.apt import Archive, Description, parse_stanzas, translations
from lmlab.data.sources.dataset import Raw, Source
from lmlab.data.sources.descriptions import LICENCE
from lmlab.errors import DataError


def section(value: str) -> str:
    """The section without its component: ``contrib/games`` -> ``games``."""
    return value.strip().rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Package:
    """A binary package of the ``Packages`` index with its section and English description."""

    name: str
    source: str  # the source package it is built from (its own name where the index gives no Source)
    section: str
    description: Description


def described(packages: str, descriptions: dict[str, Description], dropped: Counter) -> Iterator[Package]:
    """The packages of the text of a ``Packages`` index that have a section and a long description (looked up by
    ``Description-md5`` in ``descriptions``); the others are counted in ``dropped`` (no_section,
    no_long_description)."""
    for st in parse_stanzas(packages):
        label = section(st.get("Section", ""))
        d = descriptions.get(st.get("Description-md5", ""))
        if not label:
            dropped["no_section"] += 1
        elif d is None or not d.paragraphs:
            dropped["no_long_description"] += 1
        else:
            name = st.get("Package", "")
            yield Package(name, st.get("Source", name).split(" ")[0], label, d)


def examples(packages: str, descriptions: dict[str, Description]) -> Raw:
    """(description -> section) examples from the text of a ``Packages`` index and the English descriptions by
    ``Description-md5``; split-grouped by the description's first paragraph (shared by package families)."""
    raw = Raw([])
    for p in described(packages, descriptions, raw.dropped):
        d = p.description
        raw.examples.append({"text": d.synopsis + "\n" + d.long, "label": p.section, "group": d.paragraphs[0]})
    return raw


def collect(archive: Archive, min_count: int = 200) -> tuple[Raw, dict]:
    if min_count < 1:
        raise DataError(f"--min-count must be at least 1 (got {min_count})")
    raw = examples(archive.index("Packages"), translations(archive.index("Translation-en"), "en"))
    return raw, {
        "description": f"Debian package descriptions (English) labelled with the package's archive section "
                       f"(main component, {archive.arch}); sections with fewer than {min_count} examples left out.",
        "min_count": min_count,
        "method": f"Packages (main, {archive.arch}) joined with Translation-en by Description-md5. Text: the "
                  "synopsis, a newline, then the long description's paragraphs (one per line; lists and verbatim "
                  "lines flattened). Label: Section without a component prefix (contrib/, non-free/). Whitespace "
                  "normalised; exact duplicates dropped; a text that occurs with several sections dropped "
                  f"altogether (conflicting_label); sections with fewer than {min_count} examples dropped "
                  "(rare_label). Report macro-F1 beside accuracy: the classes are unbalanced.",
        "licence": LICENCE,
    }


SOURCE = Source(name="debian-sections", kind="classify", collect=collect, options={"min_count": 200},
                summary="classification: a Debian package's description -> its archive section (--min-count N)")
