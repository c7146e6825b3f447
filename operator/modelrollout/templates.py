"""Placeholders in user-written PromQL (``{{ workload }}``) and how they are filled.

A query template is user input that ends up inside a query language, so
filling it is an injection boundary: values are escaped for the PromQL
context they land in, and a placeholder outside that context is refused
rather than guessed at.  Spec validation uses :func:`placeholders_in` to
reject unknown names before anything is ever sent to Prometheus.
"""

from __future__ import annotations

import re

# The variables API.md promises, filled in per variant.
VARIABLES: frozenset[str] = frozenset({"workload", "host", "subset", "namespace", "interval", "experiment"})
PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")


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
