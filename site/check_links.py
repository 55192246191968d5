"""Check every internal link of a built site, offline: `python site/check_links.py build/site/html`.

Every relative `href` / `src` (and `srcset`) of every HTML page must name a file inside the site,
(the pages: every .html file but those under `_static/`, where the themes leave their unrendered
template macros),
and every `#anchor` must be an `id` (or an `<a name>`) of the page it points to. Links with a
scheme (`https:`, `mailto:`, `data:`, ...) or a host (`//host/...`) are external: they are listed
by `external_links`, never fetched.
"""
from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

LINK_ATTRS = {"href", "src", "srcset", "poster", "data"}
NOT_PAGES = ("_static", "_sources")       # folders whose .html files are no pages of the site


class Page:
    """The links (href, src, ...) of one HTML page, and its anchors (ids and <a name>)."""

    def __init__(self) -> None:
        self.links: list[str] = []
        self.anchors: set[str] = set()


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.page.anchors.add(value)
            elif name in LINK_ATTRS and not (tag == "object" and name != "data"):
                if name == "srcset":
                    self.page.links += [part.split()[0] for part in value.split(",") if part.strip()]
                else:
                    self.page.links.append(value)

    handle_startendtag = handle_starttag


def parse_page(path: Path) -> Page:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8", errors="replace"))
    collector.close()
    return collector.page


def is_external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme or parts.netloc)


def site_pages(root: Path) -> list[Path]:
    return [path for path in sorted(root.rglob("*.html"))
            if path.relative_to(root).parts[0] not in NOT_PAGES]


def check_site(root: str | Path) -> list[str]:
    """Every broken internal link of the site under `root`, as 'page: link: what is wrong'."""
    root = Path(root).resolve()
    pages = {path: parse_page(path) for path in site_pages(root)}
    if not pages:
        return [f"{root}: no HTML page"]
    problems = []
    for page_path, page in pages.items():
        where = page_path.relative_to(root).as_posix()
        for url in page.links:
            url = url.strip()
            if not url or is_external(url):
                continue
            parts = urlsplit(url)
            target = page_path
            if parts.path:
                rel = unquote(parts.path)
                if rel.startswith("/"):
                    problems.append(f"{where}: {url}: an absolute path (the site must work from any folder)")
                    continue
                target = Path(page_path.parent, *PurePosixPath(rel).parts).resolve()
                if rel.endswith("/") or target.is_dir():
                    target = target / "index.html"
                if not target.is_relative_to(root):
                    problems.append(f"{where}: {url}: points outside the site")
                    continue
                if not target.is_file():
                    problems.append(f"{where}: {url}: no such file")
                    continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                anchors = pages[target].anchors if target in pages else parse_page(target).anchors
                if fragment not in anchors:
                    problems.append(f"{where}: {url}: no anchor #{fragment} in "
                                    f"{target.relative_to(root).as_posix()}")
    return problems


def external_links(root: str | Path) -> set[str]:
    """The external links of the site (for reading; they are never fetched)."""
    return {url for path in site_pages(Path(root).resolve()) for url in parse_page(path).links
            if is_external(url.strip())}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python site/check_links.py SITE_FOLDER", file=sys.stderr)
        return 2
    problems = check_site(argv[0])
    for problem in problems:
        print(problem)
    pages = len(site_pages(Path(argv[0]).resolve()))
    print(f"{len(problems)} broken internal links in {pages} pages of {argv[0]}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
