"""Placeholders in user-written PromQL (``{{ workload }}``) and how they are filled.

A query template is user input that ends up inside a query language, so
filling it is an injection boundary: values are escaped for the PromQL
context they land in, and a placeholder outside that context is refused
rather than guessed at.  Spec validation uses :func:`placeholders_in` to
reject unknown names before anything is ever sent to Prometheus;
:func:`render` refuses everything else it cannot fill safely.

The contexts :func:`render` tells apart, by scanning the template the way
PromQL's lexer does (placeholders are opaque tokens, never re-scanned):

- code: only ``{{ interval }}`` may stand here, and its value must be a
  duration, so it can sit in a range selector (``[{{ interval }}]``) or after
  ``offset`` and cannot smuggle in an operator;
- a string (``"..."``, ``'...'`` or raw `` `...` ``): the other variables
  land here, escaped so the literal decodes back to exactly the value;
- a string that PromQL reads as a regular expression (the right-hand side
  of ``=~``/``!~``, or ``label_replace``'s regex argument): the value is
  first made an RE2 literal, so workload ``a.b`` cannot also match ``axb``;
  in ``label_replace``'s replacement argument ``$`` is doubled, so a value
  cannot expand capture groups;
- a ``#`` comment: refused, a placeholder there is almost surely a mistake.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from modelrollout import durations

# Variables that name things: they are label values, so they belong in strings.
STRING_VARIABLES: frozenset[str] = frozenset({"workload", "host", "subset", "namespace", "experiment"})
# Variables that are PromQL durations: they belong outside strings.
DURATION_VARIABLES: frozenset[str] = frozenset({"interval"})
# The variables API.md promises, filled in per variant.
VARIABLES: frozenset[str] = STRING_VARIABLES | DURATION_VARIABLES
# The blanks around a name are RE2's `\s` (ASCII, no \v), as in the CRD's CEL rule for query templates:
# Python's `\s` also takes Unicode spaces, so `{{ workload\u00a0}}` would pass here and fail admission.
PLACEHOLDER = re.compile(r"\{\{[\t\n\f\r ]*(.*?)[\t\n\f\r ]*\}\}")

# What Go's regexp.QuoteMeta escapes: every RE2 metacharacter.
_RE2_META = frozenset(r"\.+*?()|[]{}^$")
# Escapes PromQL (Go) strings understand for characters that must not appear raw.
_NAMED_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v"}
_REPLACEMENT_CHAR = "\ufffd"  # PromQL's lexer reads a literal U+FFFD as invalid UTF-8
_QUOTES = "\"'`"

# What a quoted string means to PromQL, which decides how a value is escaped in it.
_PLAIN, _REGEX, _REPLACEMENT = "plain", "regex", "replacement"
# Function arguments that are regexes or regex replacements: (function, argument index).
_SPECIAL_ARGUMENTS = {("label_replace", 4): _REGEX, ("label_replace", 2): _REPLACEMENT}
_FUNCTION_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*$")


class TemplateError(ValueError):
    """A query template cannot be filled safely; the query must not be sent."""


def placeholders_in(template: str) -> list[str]:
    """The placeholder names used in ``template``, in order of appearance."""
    return [match.group(1) for match in PLACEHOLDER.finditer(template)]


def unknown_placeholders(template: str) -> list[str]:
    """Names used in ``template`` that are not template variables (duplicates removed)."""
    seen: list[str] = []
    for name in placeholders_in(template):
        if name not in VARIABLES and name not in seen:
            seen.append(name)
    return seen


def escape_regex(value: str) -> str:
    """``value`` as an RE2 pattern matching exactly that text (Go's ``regexp.QuoteMeta``)."""
    return "".join("\\" + char if char in _RE2_META else char for char in value)


def escape_string(value: str, quote: str = '"') -> str:
    """The body of a PromQL string literal opened with ``quote`` that decodes to ``value``.

    Raises :class:`TemplateError` for text no such literal can hold: lone
    surrogates (not UTF-8), and in a raw (backtick) string, where nothing can
    be escaped, a backtick or U+FFFD.
    """
    if quote not in _QUOTES:
        raise ValueError(f"{quote!r} does not open a PromQL string")
    if any("\ud800" <= char <= "\udfff" for char in value):
        raise TemplateError("the value contains a lone surrogate, which is not valid UTF-8")
    if quote == "`":
        if "`" in value or _REPLACEMENT_CHAR in value:
            raise TemplateError("the value contains a backtick or U+FFFD, which a `raw string` cannot hold")
        return value
    escaped: list[str] = []
    for char in value:
        if char in (quote, "\\"):
            escaped.append("\\" + char)
        elif char in _NAMED_ESCAPES:
            escaped.append(_NAMED_ESCAPES[char])
        elif not char.isprintable() or char == _REPLACEMENT_CHAR:
            escaped.append(_numeric_escape(ord(char)))
        else:
            escaped.append(char)
    return "".join(escaped)


def _numeric_escape(code: int) -> str:
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill the placeholders of ``template`` with ``values``, escaped for where each one stands.

    Raises :class:`TemplateError` naming the placeholder when a name is
    unknown or has no value, when a placeholder is in the wrong context (a
    string variable outside quotes, ``interval`` inside them, anything in a
    comment or right after a backslash), when a value fails its check (an
    interval that is not a duration), and when the template has an
    unterminated string.
    """
    out: list[str] = []
    quote: str | None = None  # the quote character of the string we are in, if any
    meaning = _PLAIN  # what that string means to PromQL
    in_comment = False
    # Open brackets, innermost last: (function name if a call's "(" else None, commas so far).
    brackets: list[tuple[str | None, int]] = []
    position = 0
    while position < len(template):
        placeholder = PLACEHOLDER.match(template, position)
        if placeholder:
            name = placeholder.group(1)
            out.append(_fill(name, values, quote, meaning, in_comment))
            position = placeholder.end()
            continue
        char = template[position]
        if in_comment:
            in_comment = char != "\n"
        elif quote is not None:
            if char == "\\" and quote != "`":
                escaped = PLACEHOLDER.match(template, position + 1)
                if escaped:
                    raise TemplateError(
                        f"{_shown(escaped.group(1))} follows a backslash, "
                        "which would escape the first character of its value"
                    )
                out.append(template[position : position + 2])
                position += 2
                continue
            if char == quote:
                quote = None
        elif char in _QUOTES:
            quote = char
            meaning = _string_meaning(template[:position], brackets)
        elif char == "#":
            in_comment = True
        elif char == "(":
            function = _FUNCTION_NAME.search(template[:position])
            brackets.append((function.group(1) if function else None, 0))
        elif char in "[{":
            brackets.append((None, 0))
        elif char in ")]}" and brackets:
            brackets.pop()
        elif char == "," and brackets:
            function_name, commas = brackets[-1]
            brackets[-1] = (function_name, commas + 1)
        out.append(char)
        position += 1
    if quote is not None:
        raise TemplateError(f"the template has an unterminated string (opened with {quote})")
    return "".join(out)


def _string_meaning(before: str, brackets: list[tuple[str | None, int]]) -> str:
    """Whether a string opening after ``before`` is a regex, a regex replacement or plain text."""
    if before.rstrip().endswith(("=~", "!~")):
        return _REGEX
    if brackets:
        function, commas = brackets[-1]
        if function is not None:
            return _SPECIAL_ARGUMENTS.get((function, commas), _PLAIN)
    return _PLAIN


def _fill(name: str, values: Mapping[str, str], quote: str | None, meaning: str, in_comment: bool) -> str:
    shown = _shown(name)
    if name not in VARIABLES:
        known = ", ".join(sorted(VARIABLES))
        raise TemplateError(f"unknown placeholder {shown} (known: {known})")
    if in_comment:
        raise TemplateError(f"{shown} is inside a # comment, where it has no effect")
    value = values.get(name)
    if value is None:
        raise TemplateError(f"{shown} has no value here")
    if name in DURATION_VARIABLES:
        if quote is not None:
            raise TemplateError(f"{shown} is a duration and belongs outside quotes, e.g. [{shown}]")
        try:
            durations.parse_duration(value)
        except durations.DurationError as e:
            raise TemplateError(f"{shown}: {e}") from None
        return value
    if quote is None:
        raise TemplateError(f'{shown} must be inside a quoted string, e.g. {{label="{shown}"}}')
    if meaning == _REGEX:
        value = escape_regex(value)
    elif meaning == _REPLACEMENT:
        value = value.replace("$", "$$")
    try:
        return escape_string(value, quote)
    except TemplateError as e:
        raise TemplateError(f"{shown}: {e}") from None


def _shown(name: str) -> str:
    """A placeholder as the user would write it: ``{{ name }}``."""
    return "{{ " + name + " }}"
