#!/usr/bin/env python3
"""Writes the demo's report card (REPORT.md, the small Markdown subset demo.sh writes) as one
self-contained HTML page: headings, lists, tables, code blocks, and images — SVG loss curves
are inlined so the page opens anywhere without its run directories.

    scripts/demo_report_html.py REPORT.md REPORT.html
"""
import html
import os
import re
import sys

CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #ccc; margin-top: 2rem; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; }
pre { background: #f6f6f6; padding: .75rem; overflow-x: auto; white-space: pre-wrap; }
figure { margin: 1rem 0; } figcaption { color: #555; font-size: .9rem; }
.missing { color: #a00; }
"""

IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)\s*$")


def inline(text):
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return out


def image(alt, path, base):
    full = os.path.join(base, path)
    if not os.path.exists(full):
        return f'<p class="missing">({html.escape(alt)}: {html.escape(path)} not found)</p>'
    if full.endswith(".svg"):
        with open(full, encoding="utf-8") as f:
            svg = f.read()
        svg = re.sub(r"^<\?xml[^>]*>\s*", "", svg)
        body = svg
    else:
        body = f'<img src="{html.escape(path)}" alt="{html.escape(alt)}">'
    return f"<figure>{body}<figcaption>{html.escape(alt)}</figcaption></figure>"


def convert(lines, base):
    out, i = [], 0
    while i < len(lines):
        line = lines[i].rstrip("\n")
        if line.startswith("```"):
            j = i + 1
            block = []
            while j < len(lines) and not lines[j].startswith("```"):
                block.append(lines[j].rstrip("\n"))
                j += 1
            out.append("<pre>" + html.escape("\n".join(block)) + "</pre>")
            i = j + 1
            continue
        m = re.match(r"^(#{1,4}) (.*)$", line)
        if m:
            n = len(m.group(1))
            out.append(f"<h{n}>{inline(m.group(2))}</h{n}>")
        elif IMAGE.match(line):
            alt, path = IMAGE.match(line).groups()
            out.append(image(alt, path, base))
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            html_rows = []
            for r, cells in enumerate(rows):
                tag = "th" if r == 0 else "td"
                html_rows.append("<tr>" + "".join(f"<{tag}>{inline(c)}</{tag}>" for c in cells) + "</tr>")
            out.append("<table>" + "".join(html_rows) + "</table>")
            continue
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append("<li>" + inline(lines[i][2:].rstrip("\n")) + "</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: demo_report_html.py REPORT.md REPORT.html")
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        lines = f.readlines()
    body = convert(lines, os.path.dirname(os.path.abspath(src)))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>aji demo report card</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, dst)


if __name__ == "__main__":
    main()
