"""Passwords from the places a service keeps them: the settings, a file, a systemd credential.

One reader for every password edged takes (the broker's, the web page's), so each is found
the same way and registered as a secret (`edged.redact`) the moment it is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from edged.errors import ConfigError
from edged.redact import register_secret


def read_password(
    field: str,
    password: SecretStr | None,
    password_file: Path | None,
    credential: str,
    environ: Mapping[str, str] = os.environ,
) -> str | None:
    """``password``, else ``password_file``, else the systemd credential named ``credential``
    (``$CREDENTIALS_DIRECTORY/<credential>``); None when none is set.

    ``field`` names the setting (``mqtt.password_file``) in a `ConfigError`.
    """
    if password is not None:
        value = password.get_secret_value()
        register_secret(value)
        return value
    path = password_file
    if path is None and environ.get("CREDENTIALS_DIRECTORY"):
        cred = Path(environ["CREDENTIALS_DIRECTORY"]) / credential
        path = cred if cred.is_file() else None
    if path is None:
        return None
    try:
        value = path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError(f"{field}: cannot read {path}: {why}") from None
    register_secret(value)
    return value
