"""Header templates: placeholders, fallbacks, and values made safe for HTTP."""

from urllib.parse import unquote

import pytest

from gateway.upstream.headers import HeaderSet, HeaderTemplate, TemplateError, header_safe


def test_placeholders_and_fallbacks():
    headers = HeaderSet({"User-Id": "{user.email|anonymous}", "Model": "m={model}", "Lit": "{{x}}"})
    assert headers.render({"model": "gauss"}) == {"User-Id": "anonymous", "Model": "m=gauss", "Lit": "{x}"}
    assert headers.render({"user.email": "kim@corp.example", "model": "g"})["User-Id"] == "kim@corp.example"


def test_every_uuid_is_fresh():
    headers = HeaderSet({"A": "{uuid}", "B": "{uuid}"})
    first, second = headers.render({}), headers.render({})
    assert len({first["A"], first["B"], second["A"], second["B"]}) == 4


def test_empty_header_is_not_sent():
    assert HeaderSet({"Chat-Id": "{chat_id}", "Empty": ""}).render({}) == {}


@pytest.mark.parametrize(
    "value",
    ["홍길동", "line\r\nX-Injected: yes", "tab\there", "100% 김", "\r\nX-Evil-Name: injected", "Kim\r\n", "Kim\u2028", "\u2028Kim"],
)
def test_values_outside_printable_ascii_are_percent_encoded_and_decode_back(value):
    """Whole: CR, LF and U+2028 at the ends are encoded too, never stripped (only blanks are)."""
    safe = header_safe(value)
    assert safe.isascii() and safe.isprintable() and "\r" not in safe and "\n" not in safe
    assert unquote(safe) == value


def test_printable_ascii_is_sent_as_is():
    assert header_safe(" Kim, J. (100%) ") == "Kim, J. (100%)"


@pytest.mark.parametrize("text", ["{user.emial}", "{nope|x}", "a { b", "}"])
def test_bad_templates_are_rejected(text):
    with pytest.raises(TemplateError):
        HeaderTemplate(text)
