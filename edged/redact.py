"""Hiding secrets in text that leaves the process: logs, ``config check``, payloads, errors.

The one home for redaction, so every output hides the same things the same way:

* `redact_credentials` hides what *looks* like a credential, in any text: a URL's
  ``user:password@`` and secret-looking ``name=value`` parameters.
* `redact_secrets` hides *known* secret values wherever they appear verbatim, for texts
  that quote a value some other way (a library's error message, a pydantic error).
  Configured secrets are remembered in a process-wide registry (`register_secret`:
  the MQTT password, the camera URL's password, ...), which `redact` always applies.
* `redact` is both, and what callers use; `RedactingFilter` applies it to every log
  record (and its traceback) that reaches a handler it is installed on
  (`install_log_redaction`); `redact_arguments` to a command-line error, hiding the
  value of any secret-looking option however short (``--password x``).

Rules, chosen to hide too much rather than too little:

* **User info.** In ``scheme://USERINFO@host``, everything between ``scheme://`` and the
  *last* ``@`` that is followed by something host-like (before the end of the line or the
  next ``scheme://``) becomes ``***``. So a password holding an unencoded ``/``, ``@``,
  ``:``, ``#`` or space is hidden whole (``rtsp://u:p/w d@host:554/x`` ->
  ``rtsp://***@host:554/x``). The price: an ``@`` in a path or query with no user info
  before it hides the host and path before it (``http://cam/a@b`` -> ``http://***@b``),
  because ``u:p/w d@host`` and ``cam/a@b`` cannot be told apart.
* **Parameters.** ``name=value`` (in a query or fragment, ``&`` or ``;`` separated, a
  GStreamer property such as ``user-pw=...``, an option such as ``--password=...``,
  anywhere in a text) becomes ``name=***`` when the name (case-insensitive, `secret_name`)
  or one of its ``-``/``_``/``.``-separated parts is a secret word (user, username,
  login, pwd, pw, pass, passwd, password, token, access_token, key, apikey, api_key,
  auth, secret, sig, signature, credential(s), ...), or it contains password, passwd,
  pwd, secret, token, apikey or credential (``client_secret``, ``userPassword``). The
  value ends at ``&``, ``;``, ``#``, white space or a quote (a quoted value: at its
  closing quote). Other parameters stay
  readable: ``http://cam/video?user=***&pwd=***&res=640``. Punctuation ending an
  unquoted value right before white space or the end (``.,:!?)``) is left to the
  sentence around it (``...?pwd=***: refused``); a configured value is hidden whole
  anyway (below).
* **Known values.** Every registered secret of `MIN_SECRET_LENGTH` characters or more
  (also URL-encoded and decoded) becomes ``***`` wherever it appears. Shorter values are
  not replaced verbatim (every word holding them would be garbled); the two rules above
  still hide them where they are a URL's password or a parameter's value.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable, Sequence

MASK = "***"
MIN_SECRET_LENGTH = 4

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# What may follow the ``@`` that ends user info: a host name, an IPv4 address, or an
# IPv6 literal in brackets.
_HOST = re.compile(r"\[[0-9A-Za-z:.%]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+")

# Parameter names: the whole name (separators dropped) or one of its parts is one of
# these, or it contains one of _SECRET_PARTS.
_SECRET_WORDS = frozenset(
    {
        "user", "username", "userid", "login", "pwd", "pw", "pass", "passwd", "password",
        "passphrase", "userpw", "token", "accesstoken", "authtoken", "key", "apikey",
        "auth", "authorization", "secret", "sig", "signature", "credential", "credentials",
    }
)  # fmt: skip
_SECRET_PARTS = ("password", "passwd", "pwd", "secret", "token", "apikey", "credential")
# ``name=`` of a parameter or property; its value is found by `_params`.
_PARAM_NAME = re.compile(r"(?<![A-Za-z0-9_.-])(?P<name>-{0,2}[A-Za-z][A-Za-z0-9_.-]*)=")
_VALUE_END = re.compile(r"[&;#\s'\"]")


def secret_name(name: str) -> bool:
    """Whether a parameter or option called ``name`` holds a secret (case-insensitive)."""
    n = name.lower().lstrip("-")
    parts = [p for p in re.split(r"[-_.]+", n) if p]
    return (
        any(p in _SECRET_WORDS for p in parts)
        or "".join(parts) in _SECRET_WORDS
        or any(s in n for s in _SECRET_PARTS)
    )


def secret_value_name(name: str) -> bool:
    """Whether a value called ``name`` is worth hiding wherever it appears: a secret name
    (`secret_name`) that is not a user name, which is also an ordinary word elsewhere."""
    plain = name.lower().lstrip("-")
    return secret_name(plain) and not re.fullmatch(r"(user|username|user[-_]?id|login)", plain)


def _userinfo_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each URL's user info in ``text`` (see the module docstring)."""
    spans = []
    schemes = list(_SCHEME.finditer(text))
    for i, m in enumerate(schemes):
        start = m.end()
        stop = schemes[i + 1].start() if i + 1 < len(schemes) else len(text)
        newline = text.find("\n", start, stop)
        stop = newline if newline >= 0 else stop
        if start >= stop or text[start] == "/":  # no authority (file:///path)
            continue
        at = text.rfind("@", start, stop)
        while at >= start and not _HOST.match(text, at + 1, stop):
            at = text.rfind("@", start, at)
        if at > start:
            spans.append((start, at))
    return spans


def _params(text: str, trim: bool = True) -> list[tuple[str, int, int]]:
    """(name, start, end) of each secret-named parameter's value in ``text``; a quoted
    value's span is inside its quotes; ``trim``: without sentence punctuation after it."""
    found = []
    last = 0
    for m in _PARAM_NAME.finditer(text):
        if m.start() < last or not secret_name(m["name"]):
            continue
        start = m.end()
        quote = text[start : start + 1]
        if quote in ("'", '"'):  # a quoted value: up to its closing quote (or the line's end)
            start += 1
            stop = re.compile(f"[{quote}\n]").search(text, start)
            end = stop.start() if stop else len(text)
        else:
            stop = _VALUE_END.search(text, start)
            end = stop.start() if stop else len(text)
            # Punctuation before a space or the end is the sentence's: "...?pwd=x: error".
            while trim and end > start and text[end - 1] in ".,:!?)" and _ends(text, end):
                end -= 1
        if end > start:
            found.append((m["name"], start, end))
            last = end
    return found


def _ends(text: str, i: int) -> bool:
    """Whether a word ends at ``i``: white space or the end of the text."""
    return i == len(text) or text[i].isspace()


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each of the (disjoint, ordered) spans shown as ``***``."""
    out = []
    last = 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(MASK)
        last = end
    out.append(text[last:])
    return "".join(out)


def redact_credentials(text: str) -> str:
    """``text`` with every URL's user info and every secret-looking parameter value shown
    as ``***`` (see the module docstring for the exact rules)."""
    text = _mask(text, _userinfo_spans(text))
    return _mask(text, [(start, end) for _, start, end in _params(text)])


def redact_arguments(message: str, argv: Sequence[str]) -> str:
    """A command-line error ``message`` (argparse's) safe to show: the value given to any
    option whose name looks secret (``--password x``, ``--api-key=x``) is hidden in every
    form argparse may quote it, whatever its length, as are URL credentials and known
    secrets (`redact`)."""
    values: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for i, token in enumerate(argv):
        values |= url_secrets(token)
        name, eq, value = token.partition("=")
        if not name.startswith("-") or not secret_name(name):
            continue
        if eq:
            pairs.append((f"{name}=", value))
        elif i + 1 < len(argv):
            value = argv[i + 1]
            pairs.append((f"{name} ", value))
        if value:
            values.add(value)
    for prefix, value in pairs:
        message = message.replace(prefix + value, prefix + MASK)
    for value in sorted(values, key=len, reverse=True):
        for q in ("'", '"'):
            message = message.replace(f"{q}{value}{q}", f"{q}{MASK}{q}")
    words = re.split(r"(\s+)", message)
    message = "".join(MASK if w in values else w for w in words)
    # No argv (an error raised by hand): the word after a secret-named option.
    message = re.sub(
        r"(?<![\w-])(--?[A-Za-z][\w-]*)( +)(?!\*\*\*)(\S+)",
        lambda m: f"{m[1]}{m[2]}{MASK}" if secret_name(m[1]) else m[0],
        message,
    )
    return redact(message, values)


def _variants(value: str) -> set[str]:
    """A value as it may appear in text: as given, URL-encoded and URL-decoded."""
    return {value, urllib.parse.quote(value, safe=""), urllib.parse.unquote(value)}


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` (of `MIN_SECRET_LENGTH` characters or more, also
    URL-encoded or decoded) shown as ``***`` wherever it appears verbatim."""
    found = {v for s in secrets if s for v in _variants(s) if len(v) >= MIN_SECRET_LENGTH}
    for s in sorted(found, key=len, reverse=True):  # longest first: no half-hidden values
        text = text.replace(s, MASK)
    return text


def url_secrets(text: str) -> set[str]:
    """The secret values a source string (a URL, a GStreamer pipeline) holds: each URL's
    password (or its whole user info, without a ``:``) and the values of its
    secret-named parameters other than user names."""
    found: set[str] = set()
    for start, end in _userinfo_spans(text):
        user, colon, password = text[start:end].partition(":")
        found.add(password if colon else user)
    for name, start, end in _params(text, trim=False):
        if not secret_value_name(name):
            continue
        found.add(text[start:end])
        # An unencoded space in a value: up to the next separator (or pipeline element).
        rest = re.match(r"[^&;#\n'\"]*", text[start:])
        assert rest is not None
        found.add(rest[0].split(" ! ")[0].strip())
    return {s for s in found if s}


_registry: set[str] = set()
_registry_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a configured secret value: `redact` hides it from now on, everywhere."""
    if value:
        with _registry_lock:
            _registry.add(value)


def register_source(source: str) -> None:
    """Remember the secrets a camera source string holds (`url_secrets`)."""
    for value in url_secrets(source):
        register_secret(value)


def registered_secrets() -> frozenset[str]:
    with _registry_lock:
        return frozenset(_registry)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` safe to show: known secrets (registered, and ``secrets``) and whatever
    looks like a credential (`redact_credentials`) shown as ``***``."""
    text = redact_secrets(text, registered_secrets().union(secrets))
    return redact_credentials(text)


class RedactingFilter(logging.Filter):
    """Redacts every record passing through the handler it is installed on: the message
    (formatted with its arguments), the traceback and the stack. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Install a `RedactingFilter` on every handler of ``logger`` (the root logger by
    default), once: call it after the handlers are set up (``setup_logging``)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
