"""README.ko.md keeps step with README.md.

Both files are read the same way: their `## ` sections, the config keys and tables of their
```toml blocks, the `make <target>` commands and `GATEWAY_*` variables they mention, the documents
they link, and the error codes README.md names (docs/errors.md holds the whole table; the docs
themselves stay English). When README.md gains a key, a command, a code or a link, these tests
name what README.ko.md lacks (and the reverse), so the Korean README is updated in the same change.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EN = "README.md"
KO = "README.ko.md"
ERRORS = "docs/errors.md"

# A fenced block: its info string (toml, sh, ...) and its body. Fences may be indented (in lists).
FENCE = re.compile(r"^[ \t]*```([\w-]*)[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)
# `key =` at the start of a line, also commented out (`# ca_bundle = ...` documents a key too).
TOML_KEY = re.compile(r"^[ \t]*(?:#[ \t]*)?([A-Za-z_][\w-]*)[ \t]*=", re.M)
# `[gateway]`, `[backends.corp.headers]`, `[[models]]`, also commented out.
TOML_TABLE = re.compile(r"^[ \t]*(?:#[ \t]*)?(\[\[?[A-Za-z_][\w.-]*\]\]?)", re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
MAKE_TARGET = re.compile(r"(?:^|[\s`(;&|])make[ \t]+([a-z][\w-]*)", re.M)
GATEWAY_VAR = re.compile(r"\bGATEWAY_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")
SNAKE_CODE = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
SECTION = re.compile(r"^## ", re.M)


def read(name):
    return (ROOT / name).read_text(encoding="utf-8")


def toml_names(text):
    """Config keys and table headers written in the file's ```toml blocks."""
    names = set()
    for lang, body in FENCE.findall(text):
        if lang == "toml":
            names.update(TOML_KEY.findall(body))
            names.update(TOML_TABLE.findall(body))
    return names


def code_text(text):
    """The file's code: fenced blocks and inline code spans, where commands are written."""
    parts = [body for _, body in FENCE.findall(text)]
    parts += INLINE_CODE.findall(FENCE.sub("", text))
    return "\n".join(parts)


def make_targets(text):
    return {f"make {target}" for target in MAKE_TARGET.findall(code_text(text))}


def gateway_vars(text):
    return set(GATEWAY_VAR.findall(text))


def errors_table_codes(text):
    """Backticked snake_case codes in the last column of the Errors table (docs/errors.md)."""
    codes = set()
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        codes.update(SNAKE_CODE.findall(cells[-1]))
    return codes


def document_links(text):
    """Links to other files (docs/, deploy/), anchors included: the docs are English, so the
    same anchor serves both READMEs. Links between the two READMEs are left out."""
    links = {target for target in LINK.findall(FENCE.sub("", text)) if not target.startswith("#") and ":" not in target}
    return {link for link in links if link.partition("#")[0] not in (EN, KO)}


def assert_same(what, english, korean):
    missing_in_ko = sorted(english - korean)
    missing_in_en = sorted(korean - english)
    message = []
    if missing_in_ko:
        message.append(f"{what} in {EN} but missing from {KO}: {', '.join(missing_in_ko)}")
    if missing_in_en:
        message.append(f"{what} in {KO} but missing from {EN}: {', '.join(missing_in_en)}")
    assert not message, "\n".join(message) + f"\n(translate the change into {KO}; {EN} is the reference)"


def test_both_readmes_show_the_same_config_keys_and_tables():
    english, korean = toml_names(read(EN)), toml_names(read(KO))
    assert {"[gateway]", "api_keys", "url"} <= english, "the toml blocks of README.md were not found"
    assert_same("config keys and tables (```toml blocks)", english, korean)


def test_both_readmes_name_the_same_make_commands():
    english, korean = make_targets(read(EN)), make_targets(read(KO))
    assert {"make run", "make test", "make check"} <= english
    assert_same("make commands", english, korean)


def test_both_readmes_name_the_same_gateway_environment_variables():
    english, korean = gateway_vars(read(EN)), gateway_vars(read(KO))
    assert "GATEWAY_CONFIG" in english
    assert_same("GATEWAY_* environment variables", english, korean)


def test_the_korean_readme_names_every_error_code_the_english_one_names():
    table = errors_table_codes(read(ERRORS))
    assert "model_not_found" in table, f"the codes of {ERRORS}'s table were not found"
    english = {code for code in SNAKE_CODE.findall(read(EN)) if code in table}
    assert english, f"{EN} names no error code of {ERRORS}"
    korean = read(KO)
    missing = sorted(code for code in english if f"`{code}`" not in korean)
    assert not missing, f"error codes named in {EN} but missing from {KO}: {', '.join(missing)}"


def test_both_readmes_link_the_same_documents():
    english, korean = document_links(read(EN)), document_links(read(KO))
    assert {"docs/configuration.md", "docs/errors.md"} <= english, f"{EN}'s links to docs/ were not found"
    assert_same("links to other documents", english, korean)


def test_both_readmes_have_the_same_number_of_sections():
    english, korean = len(SECTION.findall(FENCE.sub("", read(EN)))), len(SECTION.findall(FENCE.sub("", read(KO))))
    assert english >= 4, f"the '## ' sections of {EN} were not found"
    assert english == korean, f"{EN} has {english} '## ' sections, {KO} {korean}: translate the sections {EN} gained or lost"


def test_the_readmes_link_each_other():
    assert f"]({KO})" in read(EN), f"{EN} does not link {KO}"
    assert f"]({EN})" in read(KO), f"{KO} does not link back to {EN}"
