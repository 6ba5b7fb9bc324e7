"""``lmlab data get``: the parsers and builders on tiny fixture files, and the whole path through a fake archive.
No network: the one class that downloads (Archive) is replaced or has its subprocess calls stubbed."""

from __future__ import annotations

import json
import re
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
from lmlab.data.sources.instructions import describe_prompt, section_prompt
from lmlab.data.sources.instructions import examples as instruction_examples
from lmlab.data.sources.preferences import VALID, rows, summary_prompt
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
                                           ("debian-summaries", {}), ("debian-sections", {"min_count": 1}),
                                           ("debian-instructions", {}), ("debian-preferences", {})])
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


# --- instruction and preference data (sft, dpo) ------------------------------------------------------------------

def test_instruction_rows():
    en = translations(TRANSLATION_EN, "en")
    raw = instruction_examples(PACKAGES, en)
    assert raw.dropped == Counter(no_long_description=1)  # nolong
    assert raw.examples[:2] == [
        {"prompt": "Describe the Debian package foo: frobnicate files quickly",
         "completion": "Foo frobnicates files. It is fast.\nIt also has a  --slow mode.",
         "group": "Foo frobnicates files. It is fast."},
        {"prompt": "Which section of the Debian archive does the package foo (frobnicate files quickly) belong to? "
                   "Answer with the section's name.", "completion": "utils",
         "group": "Foo frobnicates files. It is fast."}]
    assert [ex["completion"] for ex in raw.examples[1::2]] == ["utils", "utils", "libs", "libdevel"]
    assert raw.notes == ["describe rows before cleaning: 4", "section rows before cleaning: 4"]
    raw = instruction_examples(PACKAGES, en, ("describe",), max_chars=20)  # only baz's 17 characters fit
    assert [ex["prompt"] for ex in raw.examples] == [describe_prompt("baz", "baz library"),
                                                     describe_prompt("baz-again", "baz library")]
    assert raw.dropped == Counter(no_long_description=1, over_max_chars=2)
    assert section_prompt("x", "y").startswith("Which section")


def synthetic_archive(n: int = 600) -> tuple[str, str]:
    """A Packages index and its Translation-en: families of three packages share a first paragraph, two families
    share a source package, four sections; a few synopses are generic (used by several families)."""
    packages, en = [], []
    for i in range(n):
        fam = i // 3
        name, sec = f"pkg{fam}-{i % 3}", ("libs", "utils", "python", "doc")[fam % 4]
        synopsis = "transitional package" if i % 50 == 7 else f"tool number {i} for task {fam}"
        packages.append(f"Package: {name}\nSource: src{fam // 2} (1.0)\nSection: {sec}\nDescription-md5: m{i}\n")
        en.append(f"Package: {name}\nDescription-md5: m{i}\nDescription-en: {synopsis}\n Family {fam} does things.\n"
                  f" .\n Member {i}.\n")
    packages.append("Package: lonely\nSection: zope\nDescription-md5: z\n")  # the only one of its section
    en.append("Package: lonely\nDescription-md5: z\nDescription-en: alone in zope\n Lonely does zope things.\n")
    return "\n".join(packages), "\n".join(en)


class TextArchive(FakeArchive):
    def __init__(self, root: Path, packages: str, en: str) -> None:
        super().__init__(root)
        self.texts = {"Packages": packages, "Translation-en": en}

    def index(self, name: str) -> str:
        self.fetched.append(Fetched("index", name, "fixture"))
        return self.texts[name]


def test_preference_rows_are_verifiable_hard_negatives_and_deterministic():
    packages, en_text = synthetic_archive()
    en = translations(en_text, "en")
    raw = rows(packages, en, valid=0.1, test=0.1)
    pkg = {st["Package"]: st for st in parse_stanzas(packages)}
    by_synopsis = {en[st["Description-md5"]].synopsis: st for st in pkg.values()}
    family = {name: en[st["Description-md5"]].paragraphs[0] for name, st in pkg.items()}
    assert len(raw.examples) == 601 and not raw.dropped
    across = 0
    for ex in raw.examples:
        name = ex["prompt"].split("\n")[0].removeprefix("Write a one-line summary of the Debian package ")[:-1]
        st, other = pkg[name], by_synopsis[ex["rejected"]]
        d = en[st["Description-md5"]]
        assert ex["prompt"] == summary_prompt(name, d.long) and ex["chosen"] == d.synopsis
        assert ex["rejected"] != ex["chosen"] and ex["rejected"] != "transitional package"  # generic: never rejected
        assert family[other["Package"]] != ex["group"] and other["Source"] != st.get("Source")  # not its family
        assert split_of(family[other["Package"]], 0.1, 0.1) == split_of(ex["group"], 0.1, 0.1)  # nor another split
        across += other["Section"] != st["Section"]
    assert across == 1  # only "lonely" (alone in zope) takes a negative from another section
    assert "from another section (none acceptable in its own) in 1" in raw.notes[0]
    # the choice depends on the package, not on the order of the index
    shuffled = "\n\n".join(reversed(packages.split("\n\n")))
    assert sorted(map(str, rows(shuffled, en, valid=0.1, test=0.1).examples)) == sorted(map(str, raw.examples))
    assert len({ex["rejected"] for ex in raw.examples}) > 100  # spread over the candidates, not one for all


def test_preference_rows_drop_what_has_no_negative():
    en = translations(TRANSLATION_EN, "en")
    raw = rows(PACKAGES, en, valid=0.0, test=0.0)
    got = [(ex["chosen"], ex["rejected"]) for ex in raw.examples]
    assert got[:2] == [("frobnicate files quickly", "bar tool"), ("bar tool", "frobnicate files quickly")]
    assert [c for c, _ in got[2:]] == ["baz library"] * 2  # baz and baz-again: alone in their sections ...
    assert {r for _, r in got[2:]} <= {"bar tool", "frobnicate files quickly"}  # ... and of one family
    one = "Package: solo\nSection: utils\nDescription-md5: aaa\n"
    assert rows(one, en).dropped == Counter(no_negative=1)


@pytest.mark.parametrize("name", ["debian-instructions", "debian-preferences"])
def test_instruction_and_preference_datasets(tmp_path, name):
    packages, en = synthetic_archive()
    out = get(name, tmp_path / "a", archive=TextArchive(tmp_path, packages, en))
    m = json.loads((out / "manifest.json").read_text())
    assert (m["kind"], m["fields"]) == {"debian-instructions": ("sft", ["prompt", "completion"]),
                                        "debian-preferences": ("dpo", ["prompt", "chosen", "rejected"])}[name]
    assert m["options"]["max_chars"] == 1000
    assert m["counts"]["total"] == (1202 if name == "debian-instructions" else 601)
    readme = (out / "README.md").read_text()
    assert m["method"] in readme and "| test |" in readme and f"lmlab data get {name}" in readme
    splits = {s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text().splitlines()]
              for s in ("train", "valid", "test")}
    assert all(splits.values())  # 2% of 201 families: at least one in each held-out split
    where: dict[str, set[str]] = {}  # family -> the splits its rows are in
    for s, split_rows in splits.items():
        for r in split_rows:
            assert set(r) == set(m["fields"]) and all(isinstance(v, str) and v for v in r.values())
            family = re.search(r"package pkg(\d+)-|package (lonely)", r["prompt"]).group(1, 2)
            where.setdefault(str(family), set()).add(s)
    assert all(len(v) == 1 for v in where.values()) and len(where) == 201  # no family straddles two splits
    again = get(name, tmp_path / "b", archive=TextArchive(tmp_path, packages, en))
    for f in ("train.jsonl", "valid.jsonl", "test.jsonl", "README.md"):
        assert (again / f).read_bytes() == (out / f).read_bytes()
    if name == "debian-instructions":
        only = get(name, tmp_path / "c", archive=TextArchive(tmp_path, packages, en), tasks="describe", max_chars=0)
        m = json.loads((only / "manifest.json").read_text())
        assert m["counts"]["total"] == 601 and m["tasks"] == ["describe"] and not m["dropped"]
        with pytest.raises(DataError, match="no examples survived cleaning .*over_max_chars"):
            get(name, tmp_path / "d", archive=TextArchive(tmp_path, packages, en), tasks="describe", max_chars=10)


def test_instruction_and_preference_options_are_checked(tmp_path, capsys):
    assert VALID == SOURCES["debian-preferences"].valid  # negatives are drawn within the split the rows get
    for argv, message in [(["debian-instructions", "--tasks", "describe,poem"], "--tasks takes"),
                          (["debian-preferences", "--max-chars", "-1"], "--max-chars must be"),
                          (["debian-preferences", "--tasks", "describe"], "does not take tasks"),
                          (["debian-summaries", "--max-chars", "10"], "does not take max_chars")]:
        assert main(["data", "get", *argv, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
