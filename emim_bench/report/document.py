"""A document written once and rendered twice: Markdown and self-contained HTML; number formats."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from emim_bench.report.collect import present

DASH = "–"


def fmt_num(x, spec: str = ".2f") -> str:
    return DASH if not present(x) or pd.isna(x) else format(float(x), spec)


def fmt_mean_sd(mean, sd, spec: str = ".2f") -> str:
    if not present(mean) or pd.isna(mean):
        return DASH
    return f"{mean:{spec}} ± {sd:{spec}}" if present(sd) and not pd.isna(sd) else f"{mean:{spec}}"


def fmt_ci(low, high, spec: str = ".2f") -> str:
    if not present(low) or pd.isna(low):
        return DASH
    return f"[{low:{spec}}, {high:{spec}}]"


def fmt_bytes(x) -> str:
    if not present(x) or pd.isna(x):
        return DASH
    x = float(x)
    return f"{x / 2**30:.2f} GiB" if x >= 2**30 else f"{x / 2**20:.0f} MiB"


def fmt_seconds(x) -> str:
    if not present(x) or pd.isna(x):
        return DASH
    return f"{x:.0f} s" if x < 600 else f"{x / 60:.1f} min" if x < 7200 else f"{x / 3600:.2f} h"


def fmt_p(p) -> str:
    if not present(p) or pd.isna(p):
        return DASH
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_p_clause(p) -> str:
    """``p = 0.024`` or ``p < 0.001``: a p-value as it reads inside a sentence."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_text(x) -> str:
    return DASH if x is None or (not isinstance(x, str) and pd.isna(x)) else str(x)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; }
th { background: #f3f3f3; }
td.r { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre { background: #f6f6f6; font-family: Menlo, Consolas, monospace; font-size: .9em; }
pre { padding: .6em; overflow-x: auto; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; }
"""


def _inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


class Document:
    """Blocks (headings, paragraphs, tables, figures, code) rendered as Markdown and HTML."""

    def __init__(self, out_dir: Path):
        self.out_dir, self.blocks = out_dir, []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]):
        self.blocks.append(("ul", list(items)))

    def code(self, text: str):
        self.blocks.append(("code", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence], align: str = "l"):
        """``align``: "l" (text) or "r" (numbers) per column; the last letter repeats."""
        align = align + align[-1] * (len(header) - len(align))
        self.blocks.append(("table", list(header), [[fmt_text(c) for c in r] for r in rows], align))

    def figure(self, path: Path, caption: str):
        self.blocks.append(("fig", path, caption))

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append(f"{'#' * block[1]} {block[2]}")
            elif kind == "p":
                out.append(block[1])
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "code":
                out.append(f"```\n{block[1]}\n```")
            elif kind == "table":
                _, header, rows, align = block
                cell = lambda c: str(c).replace("|", "\\|").replace("\n", " ")
                lines = ["| " + " | ".join(cell(c) for c in header) + " |"]
                lines.append("|" + "|".join("---" if a == "l" else "---:" for a in align) + "|")
                lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
                out.append("\n".join(lines))
            elif kind == "fig":
                rel = block[1].relative_to(self.out_dir).as_posix()
                out.append(f"![{block[2]}]({rel})\n\n*{block[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_CSS}</style></head><body>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append(f"<h{block[1]}>{_inline_html(block[2])}</h{block[1]}>")
            elif kind == "p":
                out.append(f"<p>{_inline_html(block[1])}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]))
                out.append("</ul>")
            elif kind == "code":
                out.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
            elif kind == "table":
                _, header, rows, align = block
                out.append("<table><thead><tr>")
                out.append("".join(f"<th>{_inline_html(str(c))}</th>" for c in header))
                out.append("</tr></thead><tbody>")
                for r in rows:
                    cells = (
                        f"<td{'' if align[i] == 'l' else ' class=r'}>{_inline_html(str(c))}</td>"
                        for i, c in enumerate(r)
                    )
                    out.append("<tr>" + "".join(cells) + "</tr>")
                out.append("</tbody></table>")
            elif kind == "fig":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                alt = html.escape(block[2])
                out.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                    f"<figcaption>{_inline_html(block[2])}</figcaption></figure>"
                )
        out.append("</body></html>")
        return "\n".join(out) + "\n"
