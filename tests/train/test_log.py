"""The metrics log's helpers: which lmlab commit a run started from."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lmlab.train.log import source_commit

REPO = Path(__file__).resolve().parents[2]


def test_source_commit_is_the_checkout_s_head_and_whether_it_was_changed():
    git = ["git", "-C", str(REPO)]
    try:
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):  # no git, or one that refuses this checkout (its owner)
        expected = {}
    else:
        expected = {"lmlab_commit": head, "lmlab_dirty": bool(changed)}
    assert source_commit(REPO) == expected


def test_source_commit_is_empty_outside_a_git_checkout(tmp_path):
    assert source_commit(tmp_path) == {}  # no .git: an installed package
    broken = tmp_path / "broken"
    (broken / ".git").mkdir(parents=True)  # a .git that git cannot read: no commit, no error
    assert source_commit(broken) == {}
