"""Who may publish on one device's topics: the owner/twin handshake.

Two daemons left at the same ``device_id`` (two Pis called ``raspberrypi``) share every
topic. Before, they took the broker connection from each other and flipped
``availability`` forever. Now exactly one of them, the *owner*, publishes; the other, the
*twin*, publishes nothing on the device's topics, holds no last will there, and says why
in its log, its stats and its STATUS line.

The handshake runs on ``<base>/owner`` (never retained, so nothing stale is left behind).
Each message is JSON: ``{"role": "claim" | "owner", "client": ..., "instance": ...,
"since": ...}``; ``instance`` is random per start, ``since`` the start's wall time.

* A starting daemon connects **without a last will**, subscribes, says ``claim`` and
  listens for `CLAIM_WAIT` s (probing).
* An owner answers every other ``claim`` with ``owner``.
* A prober that hears ``owner`` yields: it is the twin. Two probers at once: the older
  (``since``, then ``instance``) wins; it answers the younger's claim with its own, so
  the younger yields even if it subscribed too late to hear the first one.
* Nobody answered: the prober becomes the owner. Only then does it register its last
  will (``offline`` on ``availability``) and reconnect with it, so a twin's death or
  lost network can never overwrite the owner's ``online``.
* Two owners (one took over while the other was cut off from the broker, or an answer
  came later than `CLAIM_WAIT`) meet when one of them connects and says ``owner``: the
  older stays, the younger yields with a clean DISCONNECT (the broker discards its will)
  and comes back as a twin. Neither ever says ``offline``, so availability stays up.
* A twin that sees ``offline`` on ``availability`` (the owner stopped or died) probes
  again and takes over when nobody answers.

This module is the pure part: who I am, what I heard, what to do. The publisher wires
it to paho.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from enum import Enum

# s a prober listens for an owner's answer (one round trip, milliseconds on a LAN). Short,
# because the first events of a start wait for it; an answer that comes too late costs
# little: the newcomer then says "owner" on its next connect and yields to the older.
CLAIM_WAIT = 0.5


class Role(Enum):
    PROBING = "probing"  # connected without a will, asked who owns the topics
    OWNER = "owner"  # publishes; holds the availability will
    TWIN = "twin"  # another edged owns the topics: silent


class Action(Enum):
    NOTHING = "nothing"
    ANSWER = "answer"  # say who I am (my role's message) so the other yields
    YIELD = "yield"  # I am the twin from now on


@dataclass(frozen=True, slots=True)
class Peer:
    """One daemon as its handshake messages describe it."""

    role: str  # "claim" or "owner"
    client: str  # its MQTT client id, for people reading the log
    instance: str  # random per start: tells two starts apart even with one client id
    since: float  # wall time of its start

    def older_than(self, other: Peer) -> bool:
        """The tie-break both sides compute alike: the earlier start, then the instance."""
        return (self.since, self.instance) < (other.since, other.instance)

    def payload(self) -> bytes:
        body = {
            "role": self.role,
            "client": self.client,
            "instance": self.instance,
            "since": self.since,
        }
        return json.dumps(body, separators=(",", ":")).encode()


def parse_peer(payload: bytes) -> Peer | None:
    """A handshake message, or None for anything else (never trusted further)."""
    try:
        body = json.loads(payload)
        peer = Peer(
            str(body["role"]), str(body["client"]), str(body["instance"]), float(body["since"])
        )
    except (ValueError, TypeError, KeyError):
        return None
    return peer if peer.role in ("claim", "owner") else None


class Claim:
    """This daemon's side of the handshake: its role and the rival it yielded to."""

    def __init__(self, client: str, since: float, instance: str | None = None) -> None:
        self.client = client
        self.since = since
        self.instance = instance or secrets.token_hex(4)
        self.role = Role.PROBING
        self.rival: Peer | None = None  # the owner (or older prober) this one yielded to

    def message(self) -> bytes:
        """What to say now: ``owner`` as the owner, else ``claim``."""
        return self._me().payload()

    def hear(self, other: Peer) -> Action:
        """Another daemon's message on the owner topic: what this one must do."""
        if other.instance == self.instance or self.role is Role.TWIN:
            return Action.NOTHING
        me = self._me()
        if self.role is Role.PROBING:
            if other.role == "owner" or other.older_than(me):
                return self._yield(other)
            return Action.ANSWER  # a younger prober: make sure it hears me
        if other.role == "owner" and other.older_than(me):
            return self._yield(other)
        return Action.ANSWER

    def own(self) -> None:
        """Nobody answered the claim: this daemon owns the topics."""
        self.role = Role.OWNER
        self.rival = None

    def probe(self) -> None:
        """Ask again (the owner went offline, or the twin reconnected)."""
        self.role = Role.PROBING

    def _yield(self, other: Peer) -> Action:
        self.role = Role.TWIN
        self.rival = other
        return Action.YIELD

    def _me(self) -> Peer:
        role = "owner" if self.role is Role.OWNER else "claim"
        return Peer(role, self.client, self.instance, self.since)
