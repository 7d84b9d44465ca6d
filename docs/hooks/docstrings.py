"""MkDocs hook: Sphinx roles in the plain docstrings shown as plain code.

The core library's docstrings are plain text with Sphinx-style roles (``:class:`Generator```);
mkdocstrings renders them as Markdown, so the role's name would show before the code. This
hook drops it from the API reference pages' HTML: ``:class:<code>X</code>`` → ``<code>X</code>``,
and the ``~`` of Sphinx's short form.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|attr|mod|obj|exc|const):(?=<code>)")


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """Strip the role names on the reference pages."""
    if not page.file.src_uri.startswith("reference/"):
        return html
    return ROLE.sub("", html).replace("<code>~", "<code>")  # ``~a.b.C``: Sphinx's short form
