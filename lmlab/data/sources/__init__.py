"""Real task data from Debian's archive: ``lmlab data get NAME``.

One module per source; each fetches what it needs through :class:`~lmlab.data.sources.apt.Archive` (a private
apt configuration, downloads cached under ``$LMLAB_CACHE`` or ``~/.cache/lmlab/sources``) and hands raw examples
to :mod:`lmlab.data.sources.dataset`, which cleans, splits by hash and writes the same layout for every source::

    from lmlab.data.sources import get
    get("debian-handbook", "data/handbook-de-en", pair="de-en")

This is the one part of lmlab that uses the network, and only when asked to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lmlab.data.sources import descriptions, handbook, instructions, preferences, sections, summaries
from lmlab.data.sources.apt import Archive
from lmlab.data.sources.dataset import Source, build, check_out, manifest_for, readme_for, write
from lmlab.errors import DataError

SOURCES: dict[str, Source] = {m.SOURCE.name: m.SOURCE for m in (handbook, descriptions, summaries, sections,
                                                                  instructions, preferences)}

SPLIT_RULE = ("Splits are fixed by a hash: an example's split key (its normalised first field: source text, text or "
              "prompt; or the group named in the method) goes to bucket int(sha1(key)[:8], 16) % 10000; buckets below "
              "{test} are test, below {test_valid} valid, the rest train. Equal keys always share a split, so no "
              "test source is trained on, and every run gives the same files.")


def get(name: str, out: str | Path, *, overwrite: bool = False, archive: Archive | None = None,
        log: Callable[[str], None] | None = None, **options) -> Path:
    """Build the dataset ``name`` (one of :data:`SOURCES`) into the directory ``out``: ``train.jsonl``,
    ``valid.jsonl``, ``test.jsonl``, ``manifest.json`` and ``README.md``. ``options`` are the source's own
    (``pair``, ``unit``, ``min_count``, ``tasks``, ``max_chars``; None means the default). Downloads go through
    ``archive`` (default: a fresh :class:`Archive` on the cache directory) and what is being fetched is told to
    ``log``.

    Raises :class:`DataError` for an unknown name or option, an existing non-empty ``out`` (unless
    ``overwrite``), or a failed download."""
    source = SOURCES.get(name)
    if source is None:
        raise DataError(f"unknown data source {name!r}; valid names: {', '.join(SOURCES)}")
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(source.options))
    if unknown:
        takes = ", ".join(source.options) or "no options"
        raise DataError(f"{name} does not take {', '.join(unknown)} (it takes: {takes})")
    options = {**source.options, **options}
    out = check_out(out, overwrite)
    archive = archive or Archive(log=log or (lambda message: None))
    raw, info = source.collect(archive, **options)
    built = build(raw, source.kind, valid=source.valid, test=source.test, min_count=options.get("min_count", 0),
                  identical_reason=source.identical_reason, drop_ambiguous=source.drop_ambiguous)
    if not any(built.splits.values()):
        raise DataError(f"{name}: no examples survived cleaning ({dict(built.dropped)})")
    rule = SPLIT_RULE.format(test=round(source.test * 10_000), test_valid=round((source.test + source.valid) * 10_000))
    manifest = manifest_for(
        built, source.kind, name=name, options=options, split_rule=rule, **info,
        notes=raw.notes, origin={"archive": "Debian", "mirror": archive.mirror, "suite": archive.suite,
                                 "fetched": [f.to_dict() for f in archive.fetched]})
    return write(out, built, manifest, readme_for(manifest), overwrite=overwrite)


__all__ = ["SOURCES", "Archive", "Source", "get"]
