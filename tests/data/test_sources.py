"""``lmlab data get``: the parsers and builders on tiny fixture files, and the whole path through a fake archive.
No network: the one class that downloads (Archive) is replaced or has its subprocess calls stubbed."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.data.sources import SOURCES, get
from lmlab.data.sources.apt import Archive, Fetched, parse_description, parse_stanzas, translations
from lmlab.data.sources.dataset import Raw, build, normalize, split_of
from lmlab.data.sources.descriptions import pairs as description_pairs
from lmlab.data.sources.handbook import align, page_units
from lmlab.data.sources.sections import examples as section_examples
from lmlab.data.sources.summaries import pairs as summary_pairs
from lmlab.errors import DataError

TRANSLATION_EN = """\
Package: foo
Description-md5: aaa
Description-en: frobnicate files quickly
 Foo frobnicates files. It is
 fast.
 .
 It also has a  --slow mode.

Package: bar
Description-md5: bbb
Description-en: bar tool
 Bar does things.
 .
 Second paragraph.

Package: baz
Description-md5: ccc
Description-en: baz library
 Baz is a library.

Package: nolong
Description-md5: ddd
Description-en: only a synopsis

Package: node-x
Description-md5: eee
Description-en: make x
 Node.js is an event-based server-side JavaScript engine.

Package: node-y
Description-md5: fff
Description-en: make y
 Node.js is an event-based server-side JavaScript engine.
"""

TRANSLATION_DE = """\
Package: bar
Description-md5: bbb
Description-de: Bar-Werkzeug
 Bar tut Dinge.
 .
 Zweiter Absatz.

Package: baz
Description-md5: ccc
Description-de: Baz-Bibliothek
 Baz ist eine Bibliothek.
 .
 Ein Absatz zu viel.

Package: foo
Description-md5: aaa
Description-de: Dateien schnell frobnizieren
 Foo frobniziert Dateien. Es ist
 schnell.
 .
 It also has a  --slow mode.

Package: gone
Description-md5: zzz
Description-de: nicht mehr im Archiv
"""

PACKAGES = """\
Package: foo
Version: 1.0-1
Section: utils
Description: frobnicate files quickly
Description-md5: aaa

Package: bar
Version: 2.0-1
Section: contrib/utils
Description: bar tool
Description-md5: bbb

Package: baz
Version: 1
Section: libs
Description-md5: ccc

Package: baz-again
Version: 1
Section: libdevel
Description-md5: ccc

Package: nolong
Section: misc
Description-md5: ddd
"""


def page(*units: tuple[str, str]) -> str:
    body = "".join(f'<div class="para">\n\t{t}\n</div>' if k == "para" else f'<h2 class="title">{t}</h2>'
                   for k, t in units)
    return (f'<html><body><p id="title"><a href="x">banner</a></p><ul class="docnav"><li>Prev</li></ul>'
            f'<div class="section">{body}</div></body></html>')


@pytest.fixture
def html_dirs(tmp_path: Path) -> Path:
    root = tmp_path / "usr/share/doc/debian-handbook/html"
    en, de = root / "en-US", root / "de-DE"
    en.mkdir(parents=True)
    de.mkdir()
    (en / "a.html").write_text(page(("title", "1. Intro"), ("para", "The <code>apt</code> tool &amp; you."),
                                    ("para", "apt-get install foo")))
    (de / "a.html").write_text(page(("title", "1. Einführung"), ("para", "Das Werkzeug <code>apt</code> &amp; Sie."),
                                    ("para", "apt-get install foo")))
    (en / "b.html").write_text(page(("para", "One."), ("para", "Two.")))
    (de / "b.html").write_text(page(("para", "Eins."), ("para", "Zwei."), ("para", "Drei.")))  # does not align
    (en / "c.html").write_text(page(("para", "Only in English.")))
    return root


class FakeArchive(Archive):
    """The archive with its downloads replaced by the fixture files."""

    def __init__(self, package_root: Path) -> None:
        super().__init__(root=package_root / "cache")
        self.package_root = package_root

    def index(self, name: str) -> str:
        self.fetched.append(Fetched("index", name, "fixture"))
        return {"Packages": PACKAGES, "Translation-en": TRANSLATION_EN, "Translation-de": TRANSLATION_DE}[name]

    def package(self, name: str) -> Path:
        self.fetched.append(Fetched("package", name, "1.0"))
        return self.package_root


def test_control_files_and_descriptions():
    stanzas = list(parse_stanzas(TRANSLATION_EN))
    assert [s["Package"] for s in stanzas] == ["foo", "bar", "baz", "nolong", "node-x", "node-y"]
    d = parse_description(stanzas[0]["Description-en"])
    assert d.synopsis == "frobnicate files quickly"
    assert d.paragraphs == ("Foo frobnicates files. It is fast.", "It also has a  --slow mode.")
    assert parse_description(stanzas[3]["Description-en"]).paragraphs == ()
    # a translator's " <no-break space>" line is a paragraph break inside the stanza, not the stanza's end
    (st,) = parse_stanzas("Package: p\nDescription-fr: s\n Un.\n \u00a0\n Deux.\n")
    assert parse_description(st["Description-fr"]).paragraphs == ("Un.", "Deux.")
    with pytest.raises(DataError, match="continuation"):
        list(parse_stanzas(" stray\n"))


def test_description_pairs_matched_by_md5():
    en, de = translations(TRANSLATION_EN, "en"), translations(TRANSLATION_DE, "de")
    raw, counts = description_pairs(de, en, "both")
    assert counts == {"source": 4, "target": 6, "matched": 3}  # "gone" has no English original
    got = {(p["source"], p["target"]) for p in raw.examples}
    assert ("Bar-Werkzeug", "bar tool") in got and ("Zweiter Absatz.", "Second paragraph.") in got
    assert ("Foo frobniziert Dateien. Es ist schnell.", "Foo frobnicates files. It is fast.") in got
    assert ("Baz-Bibliothek", "baz library") in got  # the synopsis pairs even where paragraphs do not
    assert raw.dropped == Counter(paragraph_count_differs=2)
    assert len(description_pairs(de, en, "line")[0].examples) == 3
    assert len(description_pairs(de, en, "paragraph")[0].examples) == 4
    with pytest.raises(DataError, match="--unit"):
        description_pairs(de, en, "word")


def test_build_cleans_dedups_and_splits_by_source():
    examples = [{"source": f"sentence {i % 300}", "target": f"Satz {i % 300} v{i // 300}"} for i in range(900)]
    examples += [{"source": " sentence  7 ", "target": "Satz 7 v0"},  # a duplicate once whitespace is normalised
                 {"source": "   ", "target": "leer"}, {"source": "same", "target": "same"}]
    raw = Raw(examples, Counter(page_unaligned=4))
    built = build(raw, "seq2seq", valid=0.1, test=0.1, identical_reason="untranslated")
    assert built.dropped == Counter(page_unaligned=4, duplicate=1, empty=1, untranslated=1)
    kept = sum(len(v) for v in built.splits.values())
    assert kept == 900 and kept + sum(built.dropped.values()) - 4 == len(examples)
    sources = {s: {ex["source"] for ex in built.splits[s]} for s in built.splits}
    assert not (sources["train"] & sources["test"] or sources["train"] & sources["valid"]
                or sources["valid"] & sources["test"])
    assert 0 < len(sources["test"]) < 60 and 0 < len(sources["valid"]) < 60
    again = build(Raw(list(reversed(examples))), "seq2seq", valid=0.1, test=0.1)
    assert {s: sorted(map(str, v)) for s, v in again.splits.items()} == \
           {s: sorted(map(str, v)) for s, v in built.splits.items()}
    assert split_of("sentence 7", 0.1, 0.1) == split_of(normalize(" sentence\t7\n"), 0.1, 0.1)
    assert normalize("a  b\n\n c \t d \n") == "a b\nc d"


def test_summaries_and_sections():
    en = translations(TRANSLATION_EN, "en")
    raw = summary_pairs(en)
    assert raw.dropped == Counter(no_long_description=1)
    assert raw.examples[0] == {"source": "Foo frobnicates files. It is fast.\nIt also has a  --slow mode.",
                               "target": "frobnicate files quickly", "group": "Foo frobnicates files. It is fast."}
    built = build(raw, "seq2seq", valid=0.0, test=0.0, drop_ambiguous=True)
    assert built.dropped["ambiguous_source"] == 2  # node-x and node-y share a long description
    assert [ex["target"] for ex in built.splits["train"]] == ["frobnicate files quickly", "bar tool", "baz library"]

    raw = section_examples(PACKAGES, en)
    assert raw.dropped == Counter(no_long_description=1)
    assert [ex["label"] for ex in raw.examples] == ["utils", "utils", "libs", "libdevel"]  # contrib/ stripped
    built = build(raw, "classify", valid=0.0, test=0.0, min_count=2)
    assert built.dropped == Counter(no_long_description=1, conflicting_label=2)  # baz: libs and libdevel
    assert built.rare_labels == {} and [ex["label"] for ex in built.splits["train"]] == ["utils", "utils"]
    built = build(raw, "classify", valid=0.0, test=0.0, min_count=3)
    assert built.rare_labels == {"utils": 2} and built.dropped["rare_label"] == 2


def test_handbook_pages_align_by_position(html_dirs):
    assert page_units('<div class="para">a<div class="para">b</div>c</div><p class="title">t</p>') == \
        [("para", "ac"), ("para", "b"), ("title", "t")]
    raw, pages = align(html_dirs / "de-DE", html_dirs / "en-US")
    assert pages == {"pages": 3, "aligned": 1, "missing": ["c.html"], "unaligned": ["b.html"]}
    assert raw.dropped == Counter(page_unaligned=3, page_missing=1)
    assert raw.examples == [{"source": "1. Einführung", "target": "1. Intro"},
                            {"source": "Das Werkzeug apt & Sie.", "target": "The apt tool & you."},
                            {"source": "apt-get install foo", "target": "apt-get install foo"}]


@pytest.mark.parametrize("name, options", [("debian-handbook", {"pair": "en-de"}),
                                           ("debian-descriptions", {"pair": "de-en", "unit": "both"}),
                                           ("debian-summaries", {}), ("debian-sections", {"min_count": 1})])
def test_get_writes_a_dataset(tmp_path, html_dirs, name, options):
    out = get(name, tmp_path / "out", archive=FakeArchive(tmp_path), **options)
    m = json.loads((out / "manifest.json").read_text())
    lines = {s: (out / f"{s}.jsonl").read_text().splitlines() for s in ("train", "valid", "test")}
    assert m["name"] == name and m["kind"] == SOURCES[name].kind and m["lmlab_version"]
    assert {s: len(v) for s, v in lines.items()} | {"total": sum(map(len, lines.values()))} == m["counts"]
    assert m["counts"]["total"] > 0 and m["licence"]["name"] and m["origin"]["fetched"]
    rows = [json.loads(x) for v in lines.values() for x in v]
    assert all(set(r) == set(m["fields"]) for r in rows)
    assert "## Counts" in (out / "README.md").read_text()
    if name == "debian-handbook":
        assert m["languages"] == {"source": "en", "target": "de"} and m["dropped"]["untranslated"] == 1
    if name == "debian-sections":
        assert sum(c["total"] for c in m["labels"].values()) == m["counts"]["total"]
    with pytest.raises(DataError, match="not empty"):
        get(name, out, archive=FakeArchive(tmp_path), **options)
    assert get(name, out, archive=FakeArchive(tmp_path), overwrite=True, **options) == out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary directories left


def test_get_rejects_bad_names_and_options(tmp_path):
    with pytest.raises(DataError, match="valid names: debian-handbook, debian-descriptions"):
        get("wikipedia", tmp_path / "o")
    with pytest.raises(DataError, match="does not take pair"):
        get("debian-summaries", tmp_path / "o", pair="de-en")
    with pytest.raises(DataError, match="en with one of"):
        get("debian-descriptions", tmp_path / "o", archive=FakeArchive(tmp_path), pair="de-fr")


def test_download_failure_is_a_data_error(tmp_path, monkeypatch):
    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 100, "", "Err:1 http://deb.debian.org/debian bookworm InRelease\n"
                                           "  Could not resolve 'deb.debian.org'\nE: Some index files failed\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr("shutil.which", lambda exe: f"/usr/bin/{exe}")
    archive = Archive(root=tmp_path)
    with pytest.raises(DataError, match="could not download the package lists of Debian bookworm from Debian's "
                                        "archive"):
        archive.index("Packages")
    conf = (archive.apt_dir / "apt.conf").read_text()  # a private configuration: the system's lists are untouched
    assert f'Dir::State::Lists "{tmp_path}' in conf and 'Acquire::Languages { "en"; "de"; "fr"; };' in conf


def test_cli_refuses_unknown_name_and_non_empty_out(tmp_path, capsys):
    assert main(["data", "get", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "valid names" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert main(["data", "get", "debian-summaries", "--out", str(tmp_path / "full")]) == 2
    assert "--overwrite" in capsys.readouterr().err
