#!/usr/bin/env python3
"""Assembles data/extract_layouts/ (the extraction layout benchmark) from its sources.

Every page is a real page made by the real generator / site; see data/extract_layouts/LICENSE-NOTE.txt.
Sources (fetch them first):
  DEBS   = dir with the Debian doc packages unpacked (dpkg-deb -x PKG.deb DEBS/PKG):
           python-git-doc cyrus-sasl2-doc python-tweepy-doc python-typer-doc python-markdown-doc
           python-djangorestframework-doc libjsoncpp-doc libtinyxml-doc libcommons-lang3-java-doc libfmt-doc
  GEN    = output of bench/extract_layouts/generate.sh (Sphinx rtd/furo/alabaster, MkDocs Material)
  RDB    = a checkout of github.com/mozilla/readability (test/test-pages/*/source.html, Apache-2.0 repo)
  SHARED = /work/shared/data (cc_web_samples WARCs, html_ko)
  MIRROR = dir with bare clones named owner+name/repo (the `fetch` layout) of the GitHub repositories in
           GIT_REPOS below, each read at the commit pinned there (git show COMMIT:PATH; .gz files are gunzipped)
Writes data/extract_layouts/<family>/<name>.html.gz and manifest.tsv (family, file, source).
Usage: collect_pages.py [FAMILY...]   (only those families; the other rows of manifest.tsv are kept)
"""
import gzip
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "data/extract_layouts"
DEBS = pathlib.Path(os.environ.get("DEBS", "/tmp/extract_debs/x"))
GEN = pathlib.Path(os.environ.get("GEN", "/tmp/extract_layouts_gen"))
RDB = pathlib.Path(os.environ.get("RDB", "/work/.mirror/mozilla+readability/repo"))
SHARED = pathlib.Path(os.environ.get("SHARED", "/work/shared/data"))
MIRROR = pathlib.Path(os.environ.get("MIRROR", "/work/.mirror"))

# GitHub repositories that ship real saved or generated pages (licences: data/extract_layouts/LICENSE-NOTE.txt).
GIT_REPOS = {
    "CodeScott00/docusaurus": "0672bc2b2edf25d0804631bc2569f76e8e451b5b",  # Docusaurus 2.0.1 build/ of the classic template
    "0akarma/Scrapy-1.5-zh-CN": "1e33199f0f811cd14f9ef5b53d63fb277403d708",  # GitBook 3.2.3 _book/
    "paladini/ghost-on-github-pages-demo": "1e5885faf4ef54878bafc0f429f4fb1bc70a3ae4",  # Ghost 6 / Ghost 1 static exports
    "gleitz/howdoi": "033dd3ced06761d9d0b3a52068ea358405ab79d9",  # page_cache/: saved Stack Overflow pages
    "ramen4598/Tistory2WordPress": "bd2e623f98ac0f72f0f2a20f3781bb158bccd0ac",  # tests/unit/helpers: saved Tistory posts
}
SO = "page_cache/https{}stackoverflowcomquestions{}answertabvotes.html.gz"

D = "usr/share/doc"
PAGES = {
    "sphinx-rtd": [
        ("gen", "sphinx-sphinx_rtd_theme/install.html"), ("gen", "sphinx-sphinx_rtd_theme/getting_started.html"),
        ("gen", "sphinx-sphinx_rtd_theme/faq.html"),
        ("deb", f"python-git-doc/{D}/python-git-doc/html/intro.html"),
        ("deb", f"python-git-doc/{D}/python-git-doc/html/tutorial.html"),
        ("deb", f"cyrus-sasl2-doc/{D}/cyrus-sasl2-doc/getsasl.html"),
        ("deb", f"cyrus-sasl2-doc/{D}/cyrus-sasl2-doc/setup.html"),
        ("deb", f"cyrus-sasl2-doc/{D}/cyrus-sasl2-doc/sasl/concepts.html"),
        ("deb", f"cyrus-sasl2-doc/{D}/cyrus-sasl2-doc/sasl/sysadmin.html"),
        ("deb", f"python-tweepy-doc/{D}/python-tweepy-doc/html/authentication.html"),
    ],
    "sphinx-furo": [("gen", "sphinx-furo/install.html"), ("gen", "sphinx-furo/getting_started.html"),
                    ("gen", "sphinx-furo/faq.html")],
    "sphinx-alabaster": [("gen", "sphinx-alabaster/install.html"), ("gen", "sphinx-alabaster/getting_started.html"),
                         ("gen", "sphinx-alabaster/faq.html")],
    "sphinx-bootstrap": [("deb", f"libfmt-doc/{D}/libfmt-doc/syntax.html"), ("deb", f"libfmt-doc/{D}/libfmt-doc/usage.html")],
    "mkdocs": [
        ("gen", "mkdocs-material/data/index.html"), ("gen", "mkdocs-material/tokenizer/index.html"),
        ("deb", f"python-typer-doc/{D}/python-typer-doc/html/tutorial/first-steps/index.html"),
        ("deb", f"python-typer-doc/{D}/python-typer-doc/html/typer-cli/index.html"),
        ("deb", f"python-djangorestframework-doc/{D}/python3-djangorestframework/html/community/3.10-announcement/index.html"),
        ("deb", f"python-djangorestframework-doc/{D}/python3-djangorestframework/html/api-guide/views/index.html"),
        ("deb", f"python-markdown-doc/{D}/python-markdown-doc/docs/extensions/abbreviations.html"),
        ("deb", f"python-markdown-doc/{D}/python-markdown-doc/docs/install.html"),
    ],
    "doxygen": [("deb", f"libjsoncpp-doc/{D}/libjsoncpp-doc/index.html"),
                ("deb", f"libjsoncpp-doc/{D}/libjsoncpp-doc/class_json_1_1_value.html"),
                ("deb", f"libtinyxml-doc/{D}/libtinyxml-dev/docs/index.html"),
                ("deb", f"libtinyxml-doc/{D}/libtinyxml-dev/docs/tutorial0.html")],
    "javadoc": [("deb", f"libcommons-lang3-java-doc/{D}/libcommons-lang3-java/api/org/apache/commons/lang3/{c}.html")
                for c in ("ArrayUtils", "StringUtils", "BitField")],
    "wiki": [("rdb", "wikipedia"), ("rdb", "wikipedia-2"), ("rdb", "wikia"), ("warc", "https://an.wikipedia.org/wiki/Escopete")],
    "blog-cms": [("rdb", "wordpress"), ("rdb", "blogger"), ("rdb", "medium-1"), ("rdb", "tumblr"), ("rdb", "gitlab-blog"),
                 ("rdb", "lifehacker-post-comment-load"), ("warc", "https://creativecommons.org/2024/04/23/"),
                 ("warc", "https://maria-antoniak.github.io/2023/07/04/notes-on-mastodon.html"),
                 ("warc", "https://commoncrawl.org/blog/march-april-2024-newsletter")],
    "news": [("rdb", n) for n in ("bbc-1", "cnn", "nytimes-1", "telegraph", "wapo-1", "seattletimes-1", "lemonde-1")],
    "forum-qa": [("rdb", "spiceworks"), ("rdb", "royal-road")],
    "product-listing": [("rdb", "ehow-1"), ("rdb", "mozilla-1"), ("warc", "http://0900-hovenier.nl/gelderland/oosterbeek/"),
                        ("warc", "http://01spb.ru/company/")],
    "spa-shell": [("warc", "https://allenai.org/reviz"), ("warc", "https://www.semanticscholar.org/about")],
    "docusaurus": [("git", "CodeScott00/docusaurus", f"build/docs/{p}/index.html")
                   for p in ("intro", "tutorial-basics/markdown-features", "tutorial-basics/create-a-document",
                             "tutorial-extras/translate-your-site")],
    "gitbook": [("git", "0akarma/Scrapy-1.5-zh-CN", f"_book/{p}.html")
                for p in ("1.FIRST STEPS/tutorial", "2.BASIC CONCEPTS/Items", "2.BASIC CONCEPTS/Selectors")],
    "ghost": [("git", "paladini/ghost-on-github-pages-demo", f"{p}/index.html")
              for p in ("static/welcome-to-v3", "static/publishing-workflow", "static/v2-vs-v3-comparison",
                        "static/getting-started-in-minutes")],
    "stackexchange": [("git", "gleitz/howdoi", SO.format(site, q)) for site, q in (
        ("", "2003505howdoideleteagitbranchlocallyandremotely"),
        ("", "3702675howtocatchandprintthefullexceptiontracebackwithouthaltingexitingthe"),
        ("", "1732348regexmatchopentagsexceptxhtmlselfcontainedtags"),
        ("pt", "361861abrirarquivoempythonsC3B3funcionacompastasdowindowseminglC3AAs"))],
    "ko-blog": [("git", "ramen4598/Tistory2WordPress", f"tests/unit/helpers/{p}.html") for p in ("post384", "post634", "post637")],
    "ko-docs": [("shared", "html_ko/debian-faq-ko/basic-defs.ko.html"), ("shared", "html_ko/debian-faq-ko/choosing.ko.html")],
}


def warc_pages():
    from warcio.archiveiterator import ArchiveIterator
    pages = {}
    for f in sorted((SHARED / "cc_web_samples").glob("*.warc.gz")):
        with open(f, "rb") as fh:
            for rec in ArchiveIterator(fh):
                if rec.rec_type == "response":
                    pages.setdefault(rec.rec_headers.get_header("WARC-Target-URI"), (f.name, rec.content_stream().read()))
    return pages


def main():
    only = sys.argv[1:]  # families to (re)build; the manifest keeps the other families' rows
    unknown = [f for f in only if f not in PAGES]
    if unknown:
        sys.exit(f"unknown families {unknown}; known: {list(PAGES)}")
    warcs = warc_pages() if any(k == "warc" for f in (only or PAGES) for k, *_ in PAGES[f]) else {}
    manifest = []
    for fam, items in PAGES.items():
        if only and fam not in only:
            continue
        (OUT / fam).mkdir(parents=True, exist_ok=True)
        for kind, ref, *rest in items:
            if kind == "git":
                commit, path = GIT_REPOS[ref], rest[0]
                data = subprocess.run(["git", "--git-dir", str(MIRROR / ref.replace("/", "+") / "repo"), "show",
                                       f"{commit}:{path}"], check=True, capture_output=True).stdout
                if path.endswith(".gz"):
                    data = gzip.decompress(data)
                    path = path.removesuffix(".gz")
                leaf = pathlib.Path(path)
                leaf = leaf.parent.name if leaf.name == "index.html" else leaf.stem
                if ref == "gleitz/howdoi":  # page_cache/https[pt]stackoverflowcomquestions<id><slug>...
                    site, q = path.split("/")[1].removeprefix("https").split("stackoverflowcomquestions")
                    leaf = "so" + (f"-{site}" if site else "") + "_" + q[:len(q) - len(q.lstrip("0123456789"))]
                name = ref.split("/")[1] + "_" + leaf.replace(" ", "_").replace(".", "_")
                src = f"github:{ref}@{commit[:12]}: {rest[0]}"
            elif kind == "gen":
                data, name, src = (GEN / ref).read_bytes(), ref.replace("/index.html", "").replace("/", "_"), f"generated: {ref}"
            elif kind == "deb":
                leaf = pathlib.Path(ref).parent.name if ref.endswith("/index.html") and "libjsoncpp" not in ref else pathlib.Path(ref).name
                data, name, src = (DEBS / ref).read_bytes(), ref.split("/")[0] + "_" + leaf, f"debian: {ref}"
            elif kind == "rdb":
                data = subprocess.run(["git", "-C", str(RDB), "show", f"HEAD:test/test-pages/{ref}/source.html"],
                                      check=True, capture_output=True).stdout
                name, src = "readability_" + ref, f"mozilla/readability test/test-pages/{ref}/source.html"
            elif kind == "warc":
                url = next(u for u in warcs if u.startswith(ref))
                wf, data = warcs[url]
                name, src = "cc_" + url.split("//")[1].strip("/").replace("/", "_")[:60], f"{wf}: {url}"
            else:
                data, name, src = (SHARED / ref).read_bytes(), pathlib.Path(ref).name, f"shared: {ref}"
            name = name.removesuffix(".html").removesuffix(".htm")
            out = OUT / fam / (name + ".html.gz")
            with gzip.GzipFile(out, "wb", mtime=0, compresslevel=9) as g:
                g.write(data)
            manifest.append(f"{fam}\t{out.relative_to(OUT)}\t{src}")
    if only:  # keep the other families' rows, in the order of PAGES
        old = [r for r in (OUT / "manifest.tsv").read_text().splitlines()[1:] if r.strip()]
        rows = {f: [r for r in old + manifest if r.split("\t")[0] == f] for f in PAGES}
        for f in only:
            rows[f] = [r for r in manifest if r.split("\t")[0] == f]
        manifest = [r for f in PAGES for r in rows[f]]
    (OUT / "manifest.tsv").write_text("family\tfile\tsource\n" + "\n".join(manifest) + "\n")
    print(len(manifest), "pages")


if __name__ == "__main__":
    sys.exit(main())
