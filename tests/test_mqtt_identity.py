"""Who an edged is on the broker: its client id, and the owner/twin handshake's rules."""

from __future__ import annotations

import re

from edged.mqtt.claim import Action, Claim, Peer, Role, parse_peer
from edged.mqtt.client import client_id_of, default_client_id, machine_tag, make_client
from edged.settings import load_settings

MACHINE = "4f1c2a9be0d34c57a8e6b1f0c3d2e9a7"


def test_client_id_stands_for_the_machine_without_showing_its_id_and_differs_per_start(tmp_path):
    mid = tmp_path / "machine-id"
    mid.write_text(MACHINE + "\n")
    ids = {default_client_id(mid) for _ in range(20)}
    assert len(ids) == 20  # a random part per start: cloned SD cards differ too
    tag = machine_tag(mid)
    assert tag is not None and re.fullmatch(r"[0-9a-f]{8}", tag)
    for cid in ids:
        assert re.fullmatch(rf"edged-{tag}-[0-9a-f]{{6}}", cid), cid
        assert len(cid.encode()) <= 23  # MQTT 3.1.1's client-id guidance
        assert MACHINE[:8] not in cid and tag not in MACHINE  # never the raw id
    other = tmp_path / "other-machine-id"
    other.write_text(MACHINE[::-1] + "\n")
    assert machine_tag(other) != tag  # the stable part tells machines apart


def test_client_id_without_a_usable_machine_id_is_random_only(tmp_path):
    uninitialized = tmp_path / "machine-id"
    uninitialized.write_text("uninitialized\n")  # systemd's first-boot placeholder
    for path in (tmp_path / "missing", uninitialized, tmp_path):  # a folder: unreadable
        assert machine_tag(path) is None
        a, b = default_client_id(path), default_client_id(path)
        assert a != b and re.fullmatch(r"edged-[0-9a-f]{14}", a) and len(a) <= 23


def test_mqtt_client_id_overrides_the_default(clean_env):
    s = load_settings(None, {"mqtt": {"client_id": "kitchen-pi", "device_id": "kitchen"}})
    assert client_id_of(make_client(s)) == "kitchen-pi"
    s = load_settings(None, {"mqtt": {"device_id": "kitchen"}})
    assert client_id_of(make_client(s)).startswith("edged-")


def peer(role: str, since: float, instance: str = "other", client: str = "edged-x") -> Peer:
    return Peer(role, client, instance, since)


def test_a_newcomer_yields_to_an_owner_whatever_their_start_times():
    me = Claim("edged-new", since=100.0, instance="me")
    assert me.hear(peer("owner", since=500.0)) is Action.YIELD  # even a "younger" owner
    assert me.role is Role.TWIN and me.rival is not None and me.rival.client == "edged-x"
    assert me.hear(peer("claim", since=1.0)) is Action.NOTHING  # a twin says nothing


def test_an_owner_answers_claims_and_only_an_older_owner_makes_it_yield():
    me = Claim("edged-a", since=100.0, instance="me")
    me.own()
    assert me.hear(peer("claim", since=1.0)) is Action.ANSWER  # a newcomer: tell it
    assert parse_peer(me.message()) == Peer("owner", "edged-a", "me", 100.0)
    assert me.hear(peer("owner", since=200.0)) is Action.ANSWER  # younger owner: it yields
    assert me.role is Role.OWNER
    assert me.hear(peer("owner", since=50.0)) is Action.YIELD  # older owner: I yield
    assert me.role is Role.TWIN


def test_of_two_probers_the_older_answers_and_the_younger_yields_on_both_sides():
    old, young = Claim("edged-o", 100.0, "o"), Claim("edged-y", 100.0, "y")  # a tie: instance
    assert old.hear(parse_peer(young.message())) is Action.ANSWER  # so it hears me
    assert young.hear(parse_peer(old.message())) is Action.YIELD
    assert old.role is Role.PROBING and young.role is Role.TWIN


def test_a_daemon_ignores_its_own_messages_and_garbage_is_no_peer():
    me = Claim("edged-a", since=100.0, instance="me")
    assert me.hear(parse_peer(me.message())) is Action.NOTHING
    for junk in (
        b"",
        b"OFF",
        b"{}",
        b'{"role": "boss", "client": 1, "instance": 2, "since": 3}',
        b'{"role": "owner", "client": "c", "instance": "i", "since": "soon"}',
        b"\xff",
    ):
        assert parse_peer(junk) is None, junk
