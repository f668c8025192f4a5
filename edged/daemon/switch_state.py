"""The privacy switch's state across restarts: one small file in the state directory.

A privacy OFF must survive a restart and a reboot. The file holds ``ON`` or ``OFF``;
no file is the very first start (ON, as the README promises). A file that is there but
cannot be read or says something else means the person's last wish is unknown: edged
then starts OFF (privacy first) and says so once at WARNING; switching it ON carries on.
Written (atomically, `edged.atomic`) only when the switch changes, by the loop thread.
A write that fails (a full disk, a read-only folder) is one WARNING: the switch still
works, it is only not remembered.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edged.atomic import owner_for, write_atomic

log = logging.getLogger(__name__)

WORDS = {True: "ON", False: "OFF"}


class SwitchMemory:
    """Where the switch is remembered (``path`` None: nowhere, every start is ON)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> bool:
        """The switch as it was left: True (ON) on a first start, False (OFF) when the
        file cannot be read or understood."""
        if self.path is None:
            return True
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return True  # the very first start
        except OSError as e:
            log.warning(
                "privacy switch: cannot read its last state from %s (%s): expression "
                "detection starts OFF (privacy first); switch it ON to carry on",
                self.path,
                e.strerror or e,
            )
            return False
        word = data.strip().decode("ascii", "replace").upper()
        if word == "ON":
            return True
        if word == "OFF":
            log.info("privacy switch: expression detection starts OFF, as it was left (%s)",
                     self.path)  # fmt: skip
            return False
        log.warning(
            "privacy switch: %s holds neither ON nor OFF (%d bytes): expression detection "
            "starts OFF (privacy first); switch it ON or OFF to rewrite it",
            self.path,
            len(data),
        )
        return False

    def save(self, on: bool) -> None:
        """Remember ``on``; a failure is logged, never raised (the switch works anyway)."""
        if self.path is None:
            return
        try:
            data = f"{WORDS[on]}\n".encode()
            write_atomic(self.path, data, mode=0o644, owner=owner_for(self.path.parent))
        except OSError as e:
            log.warning(
                "privacy switch: cannot remember %s in %s (%s): it is %s now, but a restart "
                "would not know",
                WORDS[on],
                self.path,
                e.strerror or e,
                WORDS[on],
            )
