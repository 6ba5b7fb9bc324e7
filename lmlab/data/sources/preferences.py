"""``debian-preferences``: a Debian package's description and two one-line summaries, its own preferred to another
package's (preference optimisation, ``dpo``).

For every package of the ``Packages`` index (main component, one architecture) with an English long description:
prompt "Write a one-line summary of the Debian package NAME:" and the long description; chosen: the package's own
synopsis; rejected: the synopsis of another package, a hard negative from the same archive section (so it is
plausible), picked deterministically from a hash of the package's name. The preference is verifiable: the
chosen summary is the one the package's maintainer wrote for this description, the rejected one describes other
software.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from lmlab.data.sources.apt import Archive, Description, translations
from lmlab.data.sources.dataset import Raw, Source, normalize, split_of
from lmlab.data.sources.descriptions import LICENCE
from lmlab.data.sources.instructions import check_max_chars
from lmlab.data.sources.sections import Package, described

VALID = TEST = 0.02  # the source's split fractions: negatives are drawn from the package's own split


def summary_prompt(name: str, long: str) -> str:
    return f"Write a one-line summary of the Debian package {name}:\n{long}"


def _key(synopsis: str) -> str:
    return normalize(synopsis).casefold()


def _seed(name: str) -> int:
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16)


def rows(packages: str, descriptions: dict[str, Description], max_chars: int = 0, valid: float = VALID,
         test: float = TEST) -> Raw:
    """The preference rows of the packages in the text of a ``Packages`` index with English descriptions by
    ``Description-md5``, split-grouped by the description's first paragraph (``valid``/``test``: the fractions
    the rows will be split with, so that a negative comes from its row's own split).

    The rejected synopsis belongs to another package that is in the same split, not of the same family (another
    first paragraph, another source package), whose synopsis differs from the chosen one (ignoring case) and is
    not generic (used by several families, such as "transitional package", which could be right for this package
    too). Among those it is taken from the same section if there is one, else from the whole split: candidates
    sorted by name, the first acceptable one from position sha1(name) mod their number on, cyclically. Packages
    whose long description is longer than ``max_chars`` (0: no limit) are dropped (over_max_chars) and are no
    negatives; a package with no acceptable negative is dropped (no_negative)."""
    raw = Raw([])
    kept: list[Package] = []
    for p in described(packages, descriptions, raw.dropped):
        if max_chars and len(normalize(p.description.long)) > max_chars:
            raw.dropped["over_max_chars"] += 1
        else:
            kept.append(p)
    group = {p: normalize(p.description.paragraphs[0]) for p in kept}
    families = defaultdict(set)  # synopsis (case-folded) -> the groups using it
    for p in kept:
        families[_key(p.description.synopsis)].add(group[p])
    pools: dict[tuple[str, str], list[Package]] = defaultdict(list)  # (split, section) or (split, "") -> packages
    for p in sorted(kept, key=lambda p: p.name):
        s = split_of(group[p], valid, test)
        pools[s, p.section].append(p)
        pools[s, ""].append(p)

    def negative(p: Package, pool: list[Package]) -> Package | None:
        start, syn = _seed(p.name), _key(p.description.synopsis)
        for i in range(len(pool)):
            c = pool[(start + i) % len(pool)]
            k = _key(c.description.synopsis)
            if group[c] != group[p] and c.source != p.source and k != syn and len(families[k]) == 1:
                return c
        return None

    across = 0
    for p in kept:
        s = split_of(group[p], valid, test)
        other = negative(p, pools[s, p.section])
        if other is None:
            other = negative(p, pools[s, ""])
            across += other is not None
        if other is None:
            raw.dropped["no_negative"] += 1
            continue
        raw.examples.append({"prompt": summary_prompt(p.name, p.description.long), "chosen": p.description.synopsis,
                             "rejected": other.description.synopsis, "group": p.description.paragraphs[0]})
    generic = sum(len(g) > 1 for g in families.values())
    raw.notes += [f"rows before cleaning: {len(raw.examples)}; the rejected synopsis from the package's own section "
                  f"in {len(raw.examples) - across}, from another section (none acceptable in its own) in {across}",
                  f"{generic} synopses are used by several families (generic) and never rejected"]
    return raw


def collect(archive: Archive, max_chars: int = 1000) -> tuple[Raw, dict]:
    check_max_chars(max_chars)
    raw = rows(archive.index("Packages"), translations(archive.index("Translation-en"), "en"), max_chars)
    limit = f" of at most {max_chars} characters" if max_chars else ""
    return raw, {
        "description": "Preference pairs from Debian package descriptions (English), as {prompt, chosen, rejected} "
                       "rows for preference optimisation (objective dpo): the prompt asks for a one-line summary "
                       f"of a package and gives its long description{limit}; chosen is the package's own synopsis, "
                       "rejected another package's synopsis from the same archive section (a hard negative).",
        "max_chars": max_chars,
        "method": f"Packages (main, {archive.arch}) joined with Translation-en by Description-md5; one row per "
                  "package with a section and a long description. Prompt: 'Write a one-line summary of the "
                  "Debian package NAME:', a newline, then the long description (paragraphs split at ' .' lines, "
                  "one per line, lines of a paragraph joined by spaces); packages whose long description is longer "
                  "than --max-chars are dropped (over_max_chars). Chosen: the package's synopsis. Rejected: the "
                  "synopsis of another package of the same split and, where possible, the same section, that is "
                  "not of the same family (another first paragraph and another source package) and whose synopsis "
                  "differs from the chosen one (ignoring case) and is not generic (used by several families, e.g. "
                  "'transitional package', which could be right here too); picked deterministically: candidates "
                  "sorted by name, the first acceptable one from position int(sha1(NAME)[:8], 16) mod their "
                  "number on. Negatives never cross splits, so no held-out synopsis appears in train. Whitespace "
                  "normalised, exact duplicates dropped. The split is grouped by the long description's first "
                  "paragraph (package families share it), so a family never straddles train and test.",
        "licence": LICENCE,
    }


SOURCE = Source(name="debian-preferences", kind="dpo", collect=collect, options={"max_chars": 1000},
                valid=VALID, test=TEST, identical_reason="chosen_equals_rejected",
                summary="preference pairs: a package's long description -> its own synopsis (chosen) over another "
                        "package's of the same section (rejected) (--max-chars N)")
