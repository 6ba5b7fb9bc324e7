"""Debian's archive through a private apt configuration: package lists and ``.deb`` files, cached on disk.

Everything apt writes (lists, its cache, downloaded packages) lives under one cache directory, with its own
``Dir::State::Lists`` and ``Dir::Cache``; the system's apt state is never touched. This module is the only place
in lmlab that uses the network, and only when ``lmlab data get`` asks it to. Cached package lists are reused as
they are, so a dataset does not change under you; delete ``<cache>/apt`` to take the archive's current state.

Also here: the reader of Debian's control-file format (``Packages``, ``Translation-*``), which needs no network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.errors import DataError

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"  # fixed, so that the same name builds the same dataset on any machine
ARCH = "amd64"
LANGUAGES = ("en", "de", "fr")  # the Translation-* files fetched (Acquire::Languages)
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_HELPER = "/usr/lib/apt/apt-helper"


def cache_root() -> Path:
    """Where raw downloads are kept: ``$LMLAB_CACHE`` or ``~/.cache/lmlab/sources``."""
    env = os.environ.get("LMLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lmlab" / "sources"


# --- Debian's control-file format (RFC 822-like stanzas) -------------------------------------------------------

def parse_stanzas(text: str) -> Iterator[dict[str, str]]:
    """The stanzas of a ``Packages`` or ``Translation-*`` file as dicts. A multi-line field keeps its
    continuation lines (with their leading space) after a newline, as in the file."""
    fields: dict[str, str] = {}
    key = None
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line.strip(" \t"):  # only spaces and tabs: a line of a no-break space is a (translator's) text line
            if fields:
                yield fields
            fields, key = {}, None
        elif line[0] in " \t":
            if key is None:
                raise DataError(f"malformed Debian control data: a continuation line comes first: {line!r}")
            fields[key] += "\n" + line
        else:
            key, sep, value = line.partition(":")
            if not sep:
                raise DataError(f"malformed Debian control data: no 'Field:' in {line!r}")
            fields[key] = value.strip()
    if fields:
        yield fields


@dataclass(frozen=True)
class Description:
    """A package description: the one-line synopsis and the paragraphs of the long description, each paragraph
    flattened to one line (lines joined by spaces; ``.`` lines separate paragraphs)."""

    synopsis: str
    paragraphs: tuple[str, ...]

    @property
    def long(self) -> str:
        return "\n".join(self.paragraphs)


def parse_description(value: str) -> Description:
    """Split a ``Description``/``Description-xx`` field value (as :func:`parse_stanzas` returns it)."""
    synopsis, _, rest = value.partition("\n")
    paragraphs, current = [], []
    for line in rest.split("\n"):
        line = line.strip()
        if line in (".", ""):  # "" : a line of a no-break space, which some translations use for " ."
            if current:
                paragraphs.append(" ".join(current))
            current = []
        elif line:
            current.append(line)
    if current:
        paragraphs.append(" ".join(current))
    return Description(synopsis.strip(), tuple(paragraphs))


def translations(text: str, lang: str) -> dict[str, Description]:
    """``Description-md5`` -> description, from a ``Translation-<lang>`` file (first one wins; a checksum names
    one English original, so repeats are the same text)."""
    out: dict[str, Description] = {}
    for st in parse_stanzas(text):
        md5, value = st.get("Description-md5"), st.get(f"Description-{lang}")
        if md5 and value is not None and md5 not in out:
            out[md5] = parse_description(value)
    return out


# --- the archive -----------------------------------------------------------------------------------------------

@dataclass
class Fetched:
    """One thing taken from the archive, for the manifest."""

    kind: str  # "package" or "index"
    name: str
    version: str = ""  # packages: the Debian version; indexes: the suite's Release date
    sha256: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass
class Archive:
    """Debian's archive (one suite, the ``main`` component, one architecture) through apt, with every file kept
    under ``root``. ``fetched`` lists what was used, for the manifest; ``log`` hears what is being done."""

    root: Path = field(default_factory=cache_root)
    mirror: str = field(default_factory=lambda: os.environ.get("LMLAB_DEBIAN_MIRROR", MIRROR))
    suite: str = SUITE
    arch: str = ARCH
    log: Callable[[str], None] = lambda message: None
    fetched: list[Fetched] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.apt_dir = self.root / "apt" / f"{self.suite}-{self.arch}"
        self.lists = self.apt_dir / "lists"
        self._told = False

    # -- configuration

    def _config(self) -> Path:
        """Write the private apt configuration (sources, directories, languages) and return its path."""
        d = self.apt_dir
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "sources.list").write_text(f"deb [signed-by={KEYRING}] {self.mirror} {self.suite} main\n")
        langs = " ".join(f'"{lang}";' for lang in LANGUAGES)
        conf = "\n".join([
            f'Dir::Etc::SourceList "{d / "sources.list"}";',
            f'Dir::Etc::SourceParts "{d / "sources.list.d"}";',
            f'Dir::Etc::PreferencesParts "{d / "preferences.d"}";',
            f'Dir::State::Lists "{d / "lists"}";',
            f'Dir::Cache "{d / "cache"}";',
            'Dir::Cache::pkgcache "";',
            'Dir::Cache::srcpkgcache "";',
            f'APT::Architecture "{self.arch}";',
            "#clear APT::Architectures;",
            f'APT::Architectures {{ "{self.arch}"; }};',
            "#clear Acquire::Languages;",  # images often set "none"
            f"Acquire::Languages {{ {langs} }};",
            'Acquire::GzipIndexes "true";',
            'APT::Sandbox::User "root";' if os.geteuid() == 0 else "",  # the cache may be unreadable to _apt
            "#clear APT::Update::Post-Invoke-Success;",  # no system hooks on our private update
            "#clear APT::Update::Post-Invoke;",
            "#clear DPkg::Post-Invoke;",
            "",
        ])
        path = d / "apt.conf"
        path.write_text(conf)
        return path

    def _run(self, args: list[str], what: str, cwd: Path | None = None) -> str:
        exe = shutil.which(args[0]) or (args[0] if Path(args[0]).exists() else None)
        if exe is None:
            raise DataError(f"could not download {what}: `{args[0]}` is not installed (lmlab data get needs "
                            "Debian's apt)")
        proc = subprocess.run([exe, "-c", str(self._config()), *args[1:]], cwd=cwd, capture_output=True,
                              text=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith(("E:", "W:", "Err:"))]
        if proc.returncode != 0 or any(ln.startswith(("E:", "Err:")) for ln in errors):
            detail = "; ".join(errors) or proc.stderr.strip() or f"exit code {proc.returncode}"
            raise DataError(f"could not download {what} from Debian's archive ({self.mirror}): {detail}")
        return proc.stdout

    # -- package lists

    def _list_file(self, suffix: str) -> Path | None:
        """The lists file whose name ends with ``suffix`` (any compression), or None."""
        if not self.lists.is_dir():
            return None
        matches = sorted(p for p in self.lists.iterdir() if p.is_file() and _uncompressed(p.name).endswith(suffix))
        return matches[0] if matches else None

    def _lists_wanted(self) -> list[str]:
        return [f"dists_{self.suite}_main_binary-{self.arch}_Packages",
                *(f"dists_{self.suite}_main_i18n_Translation-{lang}" for lang in LANGUAGES)]

    def update(self) -> None:
        """Fetch the suite's package lists (``Packages`` and ``Translation-*``), unless already cached."""
        if all(self._list_file(s) for s in self._lists_wanted()):
            if not self._told:
                self.log(f"using the cached package lists of Debian {self.suite} in {self.lists}")
                self._told = True
            return
        self.log(f"downloading the package lists of Debian {self.suite} (main, {self.arch}; Packages, "
                 f"Translation-{{{','.join(LANGUAGES)}}}) from {self.mirror} ...")
        self._run(["apt-get", "-q", "update"], f"the package lists of Debian {self.suite}")
        self._told = True
        missing = [s for s in self._lists_wanted() if not self._list_file(s)]
        if missing:
            raise DataError(f"could not download {', '.join(missing)} from Debian's archive ({self.mirror}): apt "
                            f"did not fetch it; delete {self.apt_dir} and try again")

    def release_date(self) -> str:
        path = self._list_file(f"dists_{self.suite}_InRelease") or self._list_file(f"dists_{self.suite}_Release")
        if path is None:
            return ""
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("Date:"):
                return line.partition(":")[2].strip()
        return ""

    def index(self, name: str) -> str:
        """The text of a package list of the suite's ``main`` component: ``"Packages"`` or ``"Translation-de"``
        (fetched first if needed)."""
        self.update()
        suffix = (f"dists_{self.suite}_main_binary-{self.arch}_Packages" if name == "Packages"
                  else f"dists_{self.suite}_main_i18n_{name}")
        path = self._list_file(suffix)
        if path is None:
            raise DataError(f"no {name} for Debian {self.suite} in {self.lists}")
        data = subprocess.run([APT_HELPER, "cat-file", str(path)], capture_output=True, check=False)
        if data.returncode != 0:
            raise DataError(f"could not read {path}: {data.stderr.decode(errors='replace').strip()}")
        label = f"{self.suite}/main/" + (f"binary-{self.arch}/Packages" if name == "Packages" else f"i18n/{name}")
        self.fetched.append(Fetched("index", label, self.release_date(), hashlib.sha256(data.stdout).hexdigest()))
        return data.stdout.decode("utf-8")

    # -- packages

    def package(self, name: str) -> Path:
        """Download the package ``name`` (the suite's version) and unpack it; returns the directory it was
        unpacked into (holding ``usr/...``). Both the ``.deb`` and the unpacked tree are cached."""
        self.update()
        shown = self._run(["apt-cache", "show", "--no-all-versions", name], f"{name} (the package's record)")
        version = next((st.get("Version", "") for st in parse_stanzas(shown)), "")
        if not version:
            raise DataError(f"could not download {name} from Debian's archive: Debian {self.suite} has no such "
                            "package")
        debs = self.root / "debs"
        unpacked = self.root / "unpacked" / f"{name}_{version}"
        deb = next(iter(sorted(debs.glob(f"{name}_{version.split(':')[-1]}_*.deb"))), None)
        if deb is None:
            debs.mkdir(parents=True, exist_ok=True)
            self.log(f"downloading {name} {version} from {self.mirror} ...")
            self._run(["apt-get", "-q", "download", f"{name}={version}"], f"{name} {version}", cwd=debs)
            deb = next(iter(sorted(debs.glob(f"{name}_*.deb"))), None)
            if deb is None:
                raise DataError(f"could not download {name} from Debian's archive: apt-get download wrote no .deb")
        else:
            self.log(f"using the cached {deb}")
        if not (unpacked / ".complete").exists():
            tmp = unpacked.with_name(unpacked.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise DataError(f"could not unpack {deb}: {proc.stderr.strip()} (delete it and try again)")
            (tmp / ".complete").touch()
            shutil.rmtree(unpacked, ignore_errors=True)
            tmp.rename(unpacked)
        self.fetched.append(Fetched("package", name, version, _sha256(deb)))
        return unpacked


def _uncompressed(name: str) -> str:
    for ext in (".lz4", ".gz", ".xz", ".bz2", ".zst", ".lzma"):
        name = name.removesuffix(ext)
    return name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
