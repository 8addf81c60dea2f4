"""A self-contained report.html from report.md: one file to attach to a CI run or send to a colleague.

Only the Markdown subset edgetl writes is supported (headings, paragraphs, bullets, pipe tables,
bold, code, images); images are embedded as data URIs. Every piece of text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from edgetl.files import write_text_atomic

_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
code { background: #f4f4f4; padding: 0 3px; }
img { max-width: 100%; }
"""


def _inline(text: str) -> str:
    """Escape, then apply `code` and **bold** (code spans are not bolded inside)."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _image(alt: str, source: str, images_dir: Path) -> str:
    path = images_dir / source
    if source.startswith(("http:", "https:", "/")) or ".." in Path(source).parts or not path.is_file():
        return f"<p><em>{html.escape(alt)}</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}"></p>'


def render_html(markdown_text: str, images_dir: Path) -> str:
    lines = markdown_text.splitlines()
    body: list[str] = []
    title = "edgetl report"
    index = 0
    while index < len(lines):
        line = lines[index].rstrip()
        if not line.strip():
            index += 1
            continue
        heading = re.match(r"^(#{1,3})\s+(.*)$", line)
        image = _IMAGE.match(line.strip())
        if heading:
            level = len(heading.group(1))
            if level == 1:
                title = heading.group(2)
            body.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            index += 1
        elif image:
            body.append(_image(image.group(1), image.group(2), images_dir))
            index += 1
        elif line.startswith("|"):
            block = []
            while index < len(lines) and lines[index].startswith("|"):
                block.append(lines[index])
                index += 1
            rows = [r for r in block if not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*", r.strip())]
            has_header = len(block) > 1 and rows and block[1] not in rows
            table = ["<table>"]
            for number, row in enumerate(rows):
                tag = "th" if has_header and number == 0 else "td"
                table.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in _cells(row)) + "</tr>")
            body.append("\n".join([*table, "</table>"]))
        elif line.startswith("- "):
            items = []
            while index < len(lines) and lines[index].startswith("- "):
                items.append(f"<li>{_inline(lines[index][2:])}</li>")
                index += 1
            body.append("<ul>" + "".join(items) + "</ul>")
        else:
            paragraph = []
            while index < len(lines) and lines[index].strip() and not lines[index].startswith(("#", "|", "- ", "![")):
                paragraph.append(lines[index].strip())
                index += 1
            body.append(f"<p>{_inline(' '.join(paragraph))}</p>")
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_html(markdown_path: Path, html_path: Path) -> Path:
    markdown_path = Path(markdown_path)
    write_text_atomic(html_path, render_html(markdown_path.read_text(encoding="utf-8"), markdown_path.parent))
    return Path(html_path)
