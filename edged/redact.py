"""Hiding secrets in text that leaves the process: logs, ``config check``, payloads.

One home for redaction, so every output hides the same things the same way.
"""

from __future__ import annotations

import re

# ``scheme://user:password@`` anywhere in a string (a URL, or one inside a GStreamer
# pipeline); greedy up to the last ``@`` of the authority, as passwords may hold ``@``.
_URL_CREDENTIALS = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s]*@")


def redact_credentials(text: str) -> str:
    """``text`` with every URL's ``user:password@`` shown as ``***@``: for logs and dumps."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)
