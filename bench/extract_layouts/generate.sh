#!/bin/sh
# Regenerates the generator-made pages of data/extract_layouts/ with the real generators:
# Sphinx (themes sphinx_rtd_theme, furo, alabaster) on tweepy's reST docs (Expat licence,
# from Debian package python-tweepy-doc's _sources/), MkDocs Material on three of aji's
# own docs/*.md pages. Needs: pip install -r bench/extract_layouts/requirements.txt,
# apt-get download python-tweepy-doc. Output: $OUT (default /tmp/extract_layouts_gen).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/extract_layouts_gen}
TWEEPY=${TWEEPY:-/tmp/extract_debs/x/python-tweepy-doc/usr/share/doc/python-tweepy-doc/html/_sources}
PAGES="install getting_started authentication faq extended_tweets v2_pagination"
rm -rf "$OUT" && mkdir -p "$OUT/src"
for p in $PAGES; do cp "$TWEEPY/$p.rst.txt" "$OUT/src/$p.rst"; done
{ echo "Tweepy"; echo "======"; echo; echo ".. toctree::"; echo
  for p in $PAGES; do echo "   $p"; done; } > "$OUT/src/index.rst"
for theme in sphinx_rtd_theme furo alabaster; do
  printf 'project = "Tweepy"\nhtml_theme = "%s"\n' "$theme" > "$OUT/src/conf.py"
  sphinx-build -q -b html "$OUT/src" "$OUT/sphinx-$theme" 2>/dev/null || true
done
mkdir -p "$OUT/mk/docs"
for p in data tokenizer post-training; do cp "$ROOT/docs/$p.md" "$OUT/mk/docs/"; done
printf 'site_name: aji\ntheme:\n  name: material\nnav:\n  - data.md\n  - tokenizer.md\n  - post-training.md\n' > "$OUT/mk/mkdocs.yml"
(cd "$OUT/mk" && mkdocs build -q -d "$OUT/mkdocs-material")
