"""Filling query templates: escaping per PromQL context, and refusing what cannot be filled safely."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelrollout import templates
from modelrollout.templates import TemplateError, render

VALUES = {
    "workload": "churn-v2",
    "host": "churn.ml.svc.cluster.local",
    "subset": "v2",
    "namespace": "ml",
    "experiment": "churn-v2-rollout",
    "interval": "1m30s",
}


def test_template_error_is_a_value_error() -> None:
    assert issubclass(TemplateError, ValueError)


def test_every_variable_has_a_context() -> None:
    assert templates.STRING_VARIABLES | templates.DURATION_VARIABLES == templates.VARIABLES
    assert not templates.STRING_VARIABLES & templates.DURATION_VARIABLES


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            'sum(rate(x{workload="{{ workload }}", ns="{{ namespace }}"}[{{ interval }}]))',
            'sum(rate(x{workload="churn-v2", ns="ml"}[1m30s]))',
        ),
        ('x{a="{{workload}}", b="{{   subset   }}"}', 'x{a="churn-v2", b="v2"}'),
        ('x{h="{{ host }}",e="{{ experiment }}"}', 'x{h="churn.ml.svc.cluster.local",e="churn-v2-rollout"}'),
        ("x{a='{{ workload }}'}", "x{a='churn-v2'}"),
        ("x{a=`{{ workload }}`}", "x{a=`churn-v2`}"),
        ('x{a="pre-{{ workload }}-post"}', 'x{a="pre-churn-v2-post"}'),
        ("x offset {{ interval }}", "x offset 1m30s"),
        ("max_over_time(x[{{ interval }}:10s])", "max_over_time(x[1m30s:10s])"),
        ("no placeholders {at: 'all'}", "no placeholders {at: 'all'}"),
        # Quotes and comment characters inside strings do not change the context.
        ('x{a="it\'s # not a comment", b="{{ workload }}"}', 'x{a="it\'s # not a comment", b="churn-v2"}'),
        ('x{a="say \\"hi\\" {{ workload }}"}', 'x{a="say \\"hi\\" churn-v2"}'),
        ('x{a=`raw \\`, b="{{ workload }}"}', 'x{a=`raw \\`, b="churn-v2"}'),
        # A comment after the query may hold quotes without opening a string.
        ('x{a="{{ workload }}"} # don\'t "quote" me', 'x{a="churn-v2"} # don\'t "quote" me'),
    ],
)
def test_render_fills_placeholders(template: str, expected: str) -> None:
    assert render(template, VALUES) == expected


@pytest.mark.parametrize(
    ("value", "double", "single"),
    [
        ('a"b', 'a\\"b', 'a"b'),
        ("a'b", "a'b", "a\\'b"),
        ("a\\b", "a\\\\b", "a\\\\b"),
        ("a}b{c", "a}b{c", "a}b{c"),
        ("{{ workload }}", "{{ workload }}", "{{ workload }}"),  # values are not re-scanned
        ("line\nbreak", "line\\nbreak", "line\\nbreak"),
        ("\t\r\a\b\f\v", "\\t\\r\\a\\b\\f\\v", "\\t\\r\\a\\b\\f\\v"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f", "nul\\x00del\\x7f"),
        ("sep\u2028\u0085", "sep\\u2028\\u0085", "sep\\u2028\\u0085"),
        ("tag\U000e0001", "tag\\U000e0001", "tag\\U000e0001"),
        ("bad\ufffd", "bad\\ufffd", "bad\\ufffd"),  # PromQL's lexer reads a raw U+FFFD as invalid UTF-8
        ("ünï ✓ 日本", "ünï ✓ 日本", "ünï ✓ 日本"),
        ("a.b*c", "a.b*c", "a.b*c"),  # plain strings are not regexes
    ],
)
def test_string_escaping(value: str, double: str, single: str) -> None:
    assert render('x{a="{{ workload }}"}', {"workload": value}) == f'x{{a="{double}"}}'
    assert render("x{a='{{ workload }}'}", {"workload": value}) == f"x{{a='{single}'}}"


@pytest.mark.parametrize(
    ("template", "value", "expected"),
    [
        ('x{w=~"{{ workload }}"}', "a.b", 'x{w=~"a\\\\.b"}'),
        ('x{w!~"{{ workload }}"}', "a.b", 'x{w!~"a\\\\.b"}'),
        ('x{w =~ "{{ workload }}"}', "a+b", 'x{w =~ "a\\\\+b"}'),
        ('x{w=~"{{ workload }}-.*"}', "v(1)", 'x{w=~"v\\\\(1\\\\)-.*"}'),
        ("x{w=~'{{ workload }}'}", "a|b", "x{w=~'a\\\\|b'}"),
        ("x{w=~`{{ workload }}`}", "a.b", "x{w=~`a\\.b`}"),
        ('x{w=~"{{ workload }}"}', "^[a]{2}?$\\", 'x{w=~"\\\\^\\\\[a\\\\]\\\\{2\\\\}\\\\?\\\\$\\\\\\\\"}'),
        ('x{w=~"{{ workload }}"}', 'q"', 'x{w=~"q\\""}'),
        # A plain matcher after a regex one is plain again.
        ('x{a=~".*", w="{{ workload }}"}', "a.b", 'x{a=~".*", w="a.b"}'),
        # label_replace: the regex argument is a regex, the replacement expands $.
        (
            'label_replace(x{a="b"}, "dst", "{{ workload }}", "src", "{{ workload }}")',
            "a$1.b",
            'label_replace(x{a="b"}, "dst", "a$$1.b", "src", "a\\\\$1\\\\.b")',
        ),
        (
            'label_replace(sum by (a, b) (x), "dst", "$1", "src", "(.*)-{{ workload }}")',
            "a.b",
            'label_replace(sum by (a, b) (x), "dst", "$1", "src", "(.*)-a\\\\.b")',
        ),
        # Other functions' string arguments are plain.
        ('label_join(x, "d", "{{ workload }}", "a", "b")', "a.$b", 'label_join(x, "d", "a.$b", "a", "b")'),
    ],
)
def test_regex_contexts(template: str, value: str, expected: str) -> None:
    assert render(template, {"workload": value}) == expected


@pytest.mark.parametrize(
    ("template", "values", "message"),
    [
        ("x{a={{ workload }}}", VALUES, "{{ workload }} must be inside a quoted string"),
        ("x == {{ experiment }}", VALUES, "{{ experiment }} must be inside a quoted string"),
        ('x[{{ interval }}] offset "{{ interval }}"', VALUES, "{{ interval }} is a duration"),
        ('x{a="{{ interval }}"}', VALUES, "{{ interval }} is a duration and belongs outside quotes"),
        ('x{a="{{ workloads }}"}', VALUES, "unknown placeholder {{ workloads }}"),
        ('x{a="{{ }}"}', VALUES, "unknown placeholder {{  }}"),
        ('x{a="{{ subset }}"}', {"workload": "w"}, "{{ subset }} has no value"),
        ("x[{{ interval }}]", {"interval": "1m]) or vector(1) #"}, "{{ interval }}:"),
        ("x[{{ interval }}]", {"interval": "0s"}, "{{ interval }}:"),
        ("x[{{ interval }}]", {"interval": "1 m"}, "{{ interval }}:"),
        ('x # {{ workload }}\n{a="b"}', VALUES, "{{ workload }} is inside a # comment"),
        ('x{a="\\{{ workload }}"}', VALUES, "{{ workload }} follows a backslash"),
        # The escaped backslash closes the string, so the placeholder is outside it.
        ('x{a="\\\\"} + y{b={{ workload }}}', VALUES, "{{ workload }} must be inside a quoted string"),
        ('x{a="\\"{{ workload }}}', VALUES, "unterminated string"),
        ("x{a=`{{ workload }}`}", {"workload": "a`b"}, "{{ workload }}: the value contains a backtick"),
        ("x{a=`{{ workload }}`}", {"workload": "a\ufffd"}, "{{ workload }}: the value contains a back"),
        ('x{a="{{ workload }}"}', {"workload": "a\ud800"}, "{{ workload }}: the value contains a lone"),
    ],
)
def test_render_refuses(template: str, values: dict[str, str], message: str) -> None:
    with pytest.raises(TemplateError) as raised:
        render(template, values)
    assert message in str(raised.value)


def test_raw_strings_keep_values_verbatim() -> None:
    assert render("x{a=`{{ workload }}`}", {"workload": 'a"b\\c\nd'}) == 'x{a=`a"b\\c\nd`}'


def test_unknown_placeholders_and_placeholders_in() -> None:
    template = 'x{a="{{ workload }}", b="{{ foo }}", c="{{foo}}"}[{{ interval }}] {{ bar }}'
    assert templates.placeholders_in(template) == ["workload", "foo", "foo", "interval", "bar"]
    assert templates.unknown_placeholders(template) == ["foo", "bar"]


def test_escape_regex_is_go_quote_meta() -> None:
    assert templates.escape_regex(r"\.+*?()|[]{}^$") == r"\\\.\+\*\?\(\)\|\[\]\{\}\^\$"
    assert templates.escape_regex("plain-text_1/2#3 ") == "plain-text_1/2#3 "


# --------------------------------------------------------------------------- decoding, as PromQL does

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_NUMERIC_ESCAPES = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}


def decode_literal(text: str, start: int) -> tuple[str, int]:
    """Decode the PromQL string literal opening at ``text[start]``; return it and the index after it.

    Follows PromQL's lexer and Go's strconv.Unquote: no raw newline or U+FFFD
    in a quoted string, only known escapes, the other quote never escaped.
    """
    quote = text[start]
    position, decoded = start + 1, list[str]()
    while True:
        char = text[position]
        if char == quote:
            return "".join(decoded), position + 1
        assert char != "\ufffd"
        if quote == "`":
            decoded.append(char)
            position += 1
            continue
        assert char != "\n", "raw newline in a quoted string"
        if char != "\\":
            decoded.append(char)
            position += 1
            continue
        kind = text[position + 1]
        if kind in _SIMPLE_ESCAPES:
            decoded.append(_SIMPLE_ESCAPES[kind])
            position += 2
        elif kind == quote:
            decoded.append(quote)
            position += 2
        elif kind in _NUMERIC_ESCAPES:
            digits, base = _NUMERIC_ESCAPES[kind]
            decoded.append(chr(int(text[position + 2 : position + 2 + digits], base)))
            position += 2 + digits
        elif kind in "01234567":
            decoded.append(chr(int(text[position + 1 : position + 4], 8)))
            position += 4
        else:
            raise AssertionError(f"unknown escape \\{kind}")


def decode_matcher_value(rendered: str, prefix: str) -> str:
    """The value of the one matcher in ``rendered``; ``prefix`` runs up to its opening quote."""
    assert rendered.startswith(prefix)
    value, end = decode_literal(rendered, len(prefix) - 1)
    assert rendered[end:] == "}", "the value escaped its string literal"
    return value


VALUE_TEXT = st.text(st.characters(exclude_categories=["Cs"]))


@given(VALUE_TEXT)
def test_double_quoted_literal_decodes_to_the_value(value: str) -> None:
    assert decode_matcher_value(render('{x="{{ workload }}"}', {"workload": value}), '{x="') == value


@given(VALUE_TEXT)
def test_single_quoted_literal_decodes_to_the_value(value: str) -> None:
    assert decode_matcher_value(render("{x='{{ workload }}'}", {"workload": value}), "{x='") == value


@given(VALUE_TEXT.filter(lambda value: "`" not in value and "\ufffd" not in value))
def test_raw_literal_decodes_to_the_value(value: str) -> None:
    assert decode_matcher_value(render("{x=`{{ workload }}`}", {"workload": value}), "{x=`") == value


@given(VALUE_TEXT, VALUE_TEXT)
def test_regex_literal_matches_exactly_the_value(value: str, other: str) -> None:
    pattern = decode_matcher_value(render('{x=~"{{ workload }}"}', {"workload": value}), '{x=~"')
    assert re.fullmatch(pattern, value, re.DOTALL)
    assert bool(re.fullmatch(pattern, other, re.DOTALL)) == (other == value)
