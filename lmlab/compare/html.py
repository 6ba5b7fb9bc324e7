"""``report.html``: the report's Markdown as one self-contained HTML page, its figures inside it as ``data:``
URIs, so the page is one file to send or open anywhere.

Only the Markdown the report writes is read: ``#`` headings, paragraphs, ``|`` tables, ``-`` lists, fenced code
blocks, ``![caption](file.png)`` figures on a line of their own (a file beside the report), ``**bold**`` and
code between backquotes. Everything else is text, escaped.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_HEADING = re.compile(r"^(#{1,6}) (.*)$")
_FIGURE = re.compile(r"^!\[(.*)\]\(([^()/\\]+\.png)\)$")  # a file name beside the report, nothing else
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
code { background: #f3f3f3; padding: 0 0.2em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 13px; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { color: #555; font-size: 13px; }
"""


def _inline(text: str) -> str:
    """Escape, then code between backquotes (taken as it is) and ``**bold**`` (in the rest)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: text, not code
        parts = [text]
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else _BOLD.sub(r"<strong>\1</strong>", html.escape(p))
                   for i, p in enumerate(parts))


def _figure(caption: str, name: str, base: Path) -> str:
    path = base / name
    if not path.is_file():
        return f"<p><em>(figure {html.escape(name)} is missing)</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_inline(caption)}</figcaption></figure>")


def _table(lines: list[str]) -> str:
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    head, body = cells[0], [c for c in cells[1:] if not all(set(x) <= set("-:") for x in c)]
    out = ["<table>", "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body]
    return "\n".join(out + ["</table>"])


def markdown_to_html(text: str, base: str | Path, title: str) -> str:
    """The report's Markdown ``text`` as a whole HTML page; figures are read from ``base`` (the report's
    directory) and put into the page."""
    base = Path(base)
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:end])) + "</code></pre>")
            i = end + 1
            continue
        block = [line]
        if line.startswith("|") or line.startswith("- "):  # a table or a list: every line that continues it
            while i + 1 < len(lines) and lines[i + 1].startswith(line[:2] if line[0] == "-" else "|"):
                i += 1
                block.append(lines[i])
        i += 1
        if (m := _HEADING.match(line)) is not None:
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif (m := _FIGURE.match(line)) is not None:
            out.append(_figure(m.group(1), m.group(2), base))
        elif line.startswith("|"):
            out.append(_table(block))
        elif line.startswith("- "):
            out.append("<ul>\n" + "\n".join(f"<li>{_inline(x[2:])}</li>" for x in block) + "\n</ul>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>'
            f"\n<style>{_STYLE}</style>\n</head>\n<body>\n" + "\n".join(out) + "\n</body>\n</html>\n")
