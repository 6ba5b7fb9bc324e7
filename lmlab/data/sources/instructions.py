"""``debian-instructions``: instructions about Debian packages and their answers (instruction tuning, ``sft``).

Every package of the ``Packages`` index of the main component (one architecture) with an English long description
(``Translation-en``, by ``Description-md5``) gives up to two ``{"prompt", "completion"}`` rows:

- ``describe``: "Describe the Debian package NAME: SYNOPSIS" -> the long description (its paragraphs, one per line);
- ``section``: "Which section of the Debian archive does the package NAME (SYNOPSIS) belong to? ..." -> the
  section (``libs``, ``python``, ...).

Both rows of a package, and all packages of a family sharing a first paragraph, fall in the same split.
"""

from __future__ import annotations

from collections import Counter

from lmlab.data.sources.apt import Archive, Description, translations
from lmlab.data.sources.dataset import Raw, Source, normalize
from lmlab.data.sources.descriptions import LICENCE
from lmlab.data.sources.sections import described
from lmlab.errors import DataError

TASKS = ("describe", "section")


def describe_prompt(name: str, synopsis: str) -> str:
    return f"Describe the Debian package {name}: {synopsis}"


def section_prompt(name: str, synopsis: str) -> str:
    return (f"Which section of the Debian archive does the package {name} ({synopsis}) belong to? Answer with the "
            "section's name.")


def parse_tasks(tasks: str) -> tuple[str, ...]:
    """``"describe,section"`` -> ``("describe", "section")``; raises :class:`DataError` for an unknown task."""
    names = tuple(t.strip() for t in tasks.split(",") if t.strip())
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise DataError(f"--tasks takes a comma-separated list of {', '.join(TASKS)} (got {tasks!r})")
    return tuple(t for t in TASKS if t in names)


def check_max_chars(max_chars: int) -> None:
    if max_chars < 0:
        raise DataError(f"--max-chars must be 0 (no limit) or more (got {max_chars})")


def examples(packages: str, descriptions: dict[str, Description], tasks: tuple[str, ...] = TASKS,
             max_chars: int = 0) -> Raw:
    """The instruction rows of the packages in the text of a ``Packages`` index, with English descriptions by
    ``Description-md5``, split-grouped by the description's first paragraph. A ``describe`` row whose long
    description is longer than ``max_chars`` characters (0: no limit) is dropped (over_max_chars); the package's
    ``section`` row stays, its prompt being short."""
    raw, made = Raw([]), Counter()
    for p in described(packages, descriptions, raw.dropped):
        d, group = p.description, p.description.paragraphs[0]
        if "describe" in tasks:
            if max_chars and len(normalize(d.long)) > max_chars:
                raw.dropped["over_max_chars"] += 1
            else:
                raw.examples.append({"prompt": describe_prompt(p.name, d.synopsis), "completion": d.long,
                                     "group": group})
                made["describe"] += 1
        if "section" in tasks:
            raw.examples.append({"prompt": section_prompt(p.name, d.synopsis), "completion": p.section,
                                 "group": group})
            made["section"] += 1
    raw.notes += [f"{task} rows before cleaning: {made[task]}" for task in tasks]
    return raw


def collect(archive: Archive, tasks: str = ",".join(TASKS), max_chars: int = 1000) -> tuple[Raw, dict]:
    chosen = parse_tasks(tasks)
    check_max_chars(max_chars)
    raw = examples(archive.index("Packages"), translations(archive.index("Translation-en"), "en"), chosen,
                   max_chars)
    limit = f"at most {max_chars} characters" if max_chars else "any length"
    kinds = {"describe": f'"Describe the Debian package NAME: SYNOPSIS" -> the long description ({limit})',
             "section": '"Which section of the Debian archive does the package NAME (SYNOPSIS) belong to? Answer '
                        "with the section's name.\" -> the section (libs, python, devel, ...)"}
    return raw, {
        "description": "Instructions about Debian packages (English) and their answers, as {prompt, completion} "
                       "rows for instruction tuning (objective sft): " + "; ".join(kinds[t] for t in chosen) + ".",
        "tasks": list(chosen),
        "max_chars": max_chars,
        "method": f"Packages (main, {archive.arch}) joined with Translation-en by Description-md5; one row per "
                  "package and task, for packages with a section and a long description. describe: the prompt "
                  "names the package and gives its synopsis, the completion is the long description split into "
                  "paragraphs at ' .' lines (lines of a paragraph joined by spaces, so lists and verbatim lines "
                  "are flattened), one paragraph per line; describe rows whose long description is longer than "
                  "--max-chars are dropped (over_max_chars). section: the completion is the Section field without "
                  "a component prefix. Whitespace normalised, exact duplicates dropped. Package families (foo, "
                  "foo-data, foo-doc) often share a long description: the split is grouped by the description's "
                  "first paragraph, so a family never straddles train and test, and a package's two rows share "
                  "a split.",
        "licence": LICENCE,
    }


SOURCE = Source(name="debian-instructions", kind="sft", collect=collect,
                options={"tasks": ",".join(TASKS), "max_chars": 1000},
                summary="instruction tuning: 'Describe the Debian package NAME: SYNOPSIS' -> its long description, "
                        "and 'Which section ... NAME ...?' -> its section (--tasks describe,section; --max-chars N)")
