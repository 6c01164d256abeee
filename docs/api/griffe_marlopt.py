"""Griffe extension for the API reference: how marlopt's docstrings read on the site.

Two things marlopt's sources do that griffe does not know about:

- ``marlopt/config.py`` documents every config key with a comment on the field's line or on the
  lines just above it (``seed: int = 0  # seeds torch, numpy and every env``). Griffe reads only
  docstrings, so the comment becomes the docstring of an attribute that has none.
- Docstrings cross-reference in reST roles (``:func:`load_policy```), which Markdown would show
  literally; the role is dropped and the name kept as code.

Loaded by mkdocs.yml (``extensions: [docs/api/griffe_marlopt.py:MarloptDocstrings]``); not part
of the package, and excluded from the site's pages.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?([^`]+)`")


def _trailing_comment(line: str) -> str:
    """The comment after the code on ``line`` ("" if none): the first ``#`` outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#":
            return line[i + 1:].strip()
    return ""


class MarloptDocstrings(griffe.Extension):
    """Comments as attribute docstrings; reST roles as plain code spans."""

    def on_attribute_instance(self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute,
                              agent: griffe.Visitor | griffe.Inspector, **kwargs: Any) -> None:
        if attr.docstring is not None or attr.parent is None:
            return
        if attr.lineno is None or attr.endlineno is None or attr.filepath not in attr.lines_collection:
            return
        lines = attr.lines_collection[attr.filepath]
        above: list[str] = []
        row = attr.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#"):
            above.insert(0, lines[row].strip().lstrip("#:").strip())
            row -= 1
        text = " ".join([*above, _trailing_comment(lines[attr.endlineno - 1])]).strip()
        if text:
            attr.docstring = griffe.Docstring(ROLE.sub(r"``\1``", text), lineno=attr.lineno, parent=attr)

    def on_instance(self, *, node: ast.AST | griffe.ObjectNode, obj: griffe.Object,
                    agent: griffe.Visitor | griffe.Inspector, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"``\1``", obj.docstring.value)
