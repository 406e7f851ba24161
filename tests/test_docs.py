"""Every relative link in the READMEs and docs/ resolves: the file exists, and a `#anchor` names a
heading of the file it points to (GitHub's heading ids), so a section that is renamed or moved
cannot leave a dead link behind.

Links are read outside code (fenced blocks and inline code spans); links with a scheme (https:,
mailto:) are not followed.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", "README.ko.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")), "deploy/README.md"]

FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def without_code(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The id GitHub gives a heading: its text (markup removed) lower-cased, punctuation dropped,
    each space a hyphen. Letters of every script, digits, `_` and `-` stay."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set:
    """Every id a link may name in `path`: its headings' (repeats get -1, -2, ...) and HTML anchors."""
    text = path.read_text(encoding="utf-8")
    seen, ids = {}, set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    ids.update(HTML_ANCHOR.findall(text))
    return ids


def broken_links(path: Path, root: Path = ROOT) -> list:
    """What is wrong with each relative link of `path`, one string per broken link."""
    problems = []
    for target in LINK.findall(without_code(path.read_text(encoding="utf-8"))):
        if SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: {file_part} does not exist")
            continue
        if root not in linked.parents and linked != root:
            problems.append(f"{target}: points outside the repository")
            continue
        if anchor:
            if linked.suffix != ".md":
                problems.append(f"{target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(linked):
                problems.append(f"{target}: {linked.relative_to(root)} has no heading with id #{anchor}")
    return problems


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_relative_link_resolves(name):
    path = ROOT / name
    assert path.exists(), f"{name} is missing"
    problems = broken_links(path)
    assert not problems, f"{name} has broken links:\n" + "\n".join(problems)


def test_the_docs_are_linked_from_the_readme():
    readme = without_code((ROOT / "README.md").read_text(encoding="utf-8"))
    linked = {target.partition("#")[0] for target in LINK.findall(readme)}
    unlinked = sorted(name for name in DOCUMENTS if name.startswith("docs/") and name not in linked)
    assert not unlinked, f"README.md links none of: {', '.join(unlinked)}"


@pytest.mark.parametrize("heading, slug", [
    ("Connecting Open WebUI", "connecting-open-webui"),
    ("Embeddings (document search in Open WebUI)", "embeddings-document-search-in-open-webui"),
    ("Status page, health and metrics", "status-page-health-and-metrics"),
    ("What the test suite checks (`tests/test_deploy.py`)", "what-the-test-suite-checks-teststest_deploypy"),
    ("Checking a config: `make check`", "checking-a-config-make-check"),
    ("Open WebUI 연결", "open-webui-연결"),
    ("How a relayed stream is read (gevent)", "how-a-relayed-stream-is-read-gevent"),
])
def test_slugs_are_githubs(heading, slug):
    assert github_slug(heading) == slug


def test_a_missing_file_or_anchor_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## A section\n\n## A section\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-section) [repeat](other.md#a-section-1) [self](#here) [web](https://example.com/x)\n"
        "`[in code](gone.md)`\n```\n[in a block](gone.md)\n```\n"
        "[no file](gone.md) [no anchor](other.md#nowhere) ![no image](pic.png)\n\n## Here\n",
        encoding="utf-8",
    )
    problems = broken_links(page, root=tmp_path)
    assert [p.split(":")[0] for p in problems] == ["gone.md", "other.md#nowhere", "pic.png"], problems
