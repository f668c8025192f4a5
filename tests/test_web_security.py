"""The web page's pure checks (`edged.web.security`): which Host headers it answers, which
POSTs count as its own, the basic-auth comparison and the password-guessing limiter.

No sockets here: the HTTP side of every promise is in test_web.py. The limiter runs on a
fake clock passed in, so windows are crossed without waiting.
"""

from __future__ import annotations

import base64
from email.message import Message

import pytest

from edged.web.security import FailureLimiter, HostCheck, check_basic, host_name, same_site

# -- host_name ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8426", "localhost"),
        ("edged.lan.", "edged.lan"),  # a fully qualified name's root dot
        ("edged.lan.:8426", "edged.lan"),
        ("  edged.lan  ", "edged.lan"),
        ("127.0.0.1:8426", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::1]:8426", "::1"),
        ("[FE80::1]:80", "fe80::1"),
        ("::1", "::1"),  # unbracketed IPv6 (not valid HTTP, but no port to split off)
    ],
)
def test_host_name_drops_the_port_brackets_case_and_root_dot(header, name):
    assert host_name(header) == name


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        ":8426",  # a port without a host
        "localhost:http",  # a port that is not a number
        "localhost:84x6",
        "[::1",  # unclosed bracket
        "[::1]x",  # something after the bracket that is not a port
        "[::1]:abc",
        "[]:8426",
        ".",
    ],
)
def test_host_name_is_none_for_a_malformed_header(header):
    assert host_name(header) is None


# -- HostCheck ------------------------------------------------------------------------------


@pytest.fixture
def hosts() -> HostCheck:
    return HostCheck.for_machine("pi.home.arpa", ["edged.lan"])


@pytest.mark.parametrize(
    "header",
    [
        "localhost",
        "localhost:8426",
        "LOCALHOST:8426",
        "127.0.0.1:8426",
        "[::1]:8426",
        "192.168.1.20:8426",  # an IP address cannot be rebound to another site
        "[fd00::20]",
        "pi.home.arpa:8426",  # the machine's name, its short name, <short>.local
        "pi:8426",
        "pi.local:8426",
        "edged.lan",  # configured in http.hostnames
        "Edged.LAN.:8426",
    ],
)
def test_host_check_accepts_ips_localhost_the_machine_and_configured_names(hosts, header):
    assert hosts.allows(header)


@pytest.mark.parametrize(
    "header",
    [
        "evil.example",  # DNS rebinding: the attacker's name, pointed at this machine
        "evil.example:8426",
        "localhost.evil.example",
        "pi.evil.example",
        "edged.lan.evil.example",
        "evil.local",
        None,  # no Host at all
        "",
        "localhost:http",
        "[::1",
    ],
)
def test_host_check_refuses_foreign_missing_and_malformed_names(hosts, header):
    assert not hosts.allows(header)


def test_configured_hostnames_are_matched_without_case_or_root_dot():
    check = HostCheck(["Camera.Lan."])
    assert check.allows("camera.lan")
    assert check.allows("CAMERA.LAN:8426")
    assert not check.allows("localhost")  # only what it was given (plus IPs)


# -- same_site --------------------------------------------------------------------------------


def headers(**values: str) -> Message:
    """Request headers as the server sees them (case-insensitive names)."""
    msg = Message()
    for name, value in values.items():
        msg[name.replace("_", "-")] = value
    return msg


HOST = "localhost:8426"


@pytest.mark.parametrize("site", ["same-origin", "SAME-ORIGIN", "none"])
def test_a_post_the_browser_marks_same_origin_or_typed_is_the_pages_own(site):
    assert same_site("POST", headers(Sec_Fetch_Site=site), HOST)


@pytest.mark.parametrize("site", ["cross-site", "same-site", "bogus"])
def test_a_post_the_browser_marks_from_another_site_is_refused(site):
    # same-site is another origin under the same registrable domain: still not the page
    assert not same_site("POST", headers(Sec_Fetch_Site=site), HOST)


def test_sec_fetch_site_decides_over_origin():
    h = headers(Sec_Fetch_Site="cross-site", Origin="http://localhost:8426")
    assert not same_site("POST", h, HOST)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://localhost:8426", "localhost:8426"),
        ("http://LOCALHOST:8426", "localhost:8426"),
        ("http://127.0.0.1:8426", "127.0.0.1:8426"),
        ("http://[::1]:8426", "[::1]:8426"),
        ("https://edged.lan", "edged.lan"),  # behind a TLS proxy on the default port
        ("https://edged.lan:443", "edged.lan"),
        ("http://edged.lan", "edged.lan:80"),
    ],
)
def test_a_post_with_the_pages_own_origin_is_accepted(origin, host):
    assert same_site("POST", headers(Origin=origin), host)


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://evil.example:8426",
        "http://localhost.evil.example:8426",
        "http://localhost:9999",  # another program on this machine is another origin
        "http://localhost",  # port 80, not 8426
        "null",  # a sandboxed frame, a file:// page
        "localhost:8426",  # not an origin at all
        "file://",
        "ftp://localhost:8426",
        "http://",
        "http://[::1",
    ],
)
def test_a_post_from_another_origin_is_refused(origin):
    assert not same_site("POST", headers(Origin=origin), HOST)


def test_a_post_with_neither_header_is_not_from_a_browser_and_is_accepted():
    # curl, a script: no web page can send a request without Origin or Sec-Fetch-Site
    assert same_site("POST", headers(), HOST)


def test_a_post_with_an_origin_but_no_host_is_refused():
    assert not same_site("POST", headers(Origin="http://localhost:8426"), None)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_reads_are_never_refused_as_cross_site(method):
    assert same_site(method, headers(Sec_Fetch_Site="cross-site", Origin="http://evil"), HOST)


# -- check_basic --------------------------------------------------------------------------------


def basic(text: str | bytes, scheme: str = "Basic") -> str:
    raw = text.encode() if isinstance(text, str) else text
    return f"{scheme} {base64.b64encode(raw).decode()}"


def test_basic_auth_accepts_the_right_user_and_password():
    assert check_basic(basic("edged:hunter2"), "edged", "hunter2")


def test_basic_auth_scheme_is_case_insensitive_and_spaces_are_tolerated():
    assert check_basic(basic("edged:hunter2", "basic"), "edged", "hunter2")
    assert check_basic("BASIC   " + basic("edged:hunter2").split()[1] + "  ", "edged", "hunter2")


def test_a_password_may_contain_colons_the_user_name_ends_at_the_first():
    assert check_basic(basic("edged:a:b::c"), "edged", "a:b::c")
    assert not check_basic(basic("edged:a"), "edged", "a:b::c")


def test_a_non_ascii_password_is_compared_as_utf8():
    assert check_basic(basic("edged:pässwörd"), "edged", "pässwörd")
    assert not check_basic(basic("edged:pässwörd".encode("latin-1")), "edged", "pässwörd")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        basic("edged:wrong"),
        basic("Edged:hunter2"),  # user names are case sensitive
        basic("admin:hunter2"),  # the wrong user, the right password
        basic("edged:hunter2 "),  # a trailing space is part of the password
        basic("edged:"),
        basic(":hunter2"),
        basic("edgedhunter2"),  # no colon at all
        basic("hunter2"),
        basic("edged:hunter2", "Bearer"),
        basic("edged:hunter2", "Digest"),
        "Basic",
        "Basic ",
        "Basic !!!!",  # not base64
        "Basic ZWRnZWQ6aHVudGVyMg",  # missing padding
        "Basic ZWRnZWQ6aHVudGVyMg==extra",
        "Basic ZWRnZWQ6aHVudGVy\u00e9Mg==",  # a non-ASCII character in the header
        basic(b"edged:\xff\xfe"),  # not UTF-8 after decoding
        "Basichunter2",
    ],
)
def test_basic_auth_refuses_wrong_missing_and_malformed_credentials(header):
    assert not check_basic(header, "edged", "hunter2")


# -- FailureLimiter -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_burst_of_failures_blocks_that_address_and_is_reported_once(clock):
    lim = FailureLimiter(burst=5, window=60.0, clock=clock)
    starts = []
    for _ in range(5):
        assert not lim.blocked("10.0.0.9")
        starts.append(lim.failed("10.0.0.9"))
        clock.now += 1.0
    assert starts == [False, False, False, False, True]  # the 5th starts the burst: log it
    assert lim.blocked("10.0.0.9")
    # more failures in the same burst (a caller that counts them anyway) log nothing more
    assert not any(lim.failed("10.0.0.9") for _ in range(10))
    assert lim.total == 15


def test_a_blocked_address_does_not_block_others(clock):
    lim = FailureLimiter(burst=3, window=60.0, clock=clock)
    for _ in range(3):
        lim.failed("10.0.0.9")
    assert lim.blocked("10.0.0.9")
    assert not lim.blocked("10.0.0.10")
    assert not lim.blocked("::1")


def test_the_block_ends_when_the_window_has_passed_and_a_new_burst_is_reported_again(clock):
    lim = FailureLimiter(burst=3, window=60.0, clock=clock)
    for _ in range(3):
        lim.failed("10.0.0.9")
    clock.now += 60.0
    assert lim.blocked("10.0.0.9")  # the window counts from the burst's first failure
    clock.now += 0.5
    assert not lim.blocked("10.0.0.9")
    assert [lim.failed("10.0.0.9") for _ in range(3)] == [False, False, True]
    assert lim.blocked("10.0.0.9")


def test_failures_spread_wider_than_the_window_never_block(clock):
    lim = FailureLimiter(burst=3, window=60.0, clock=clock)
    for _ in range(20):
        assert not lim.failed("10.0.0.9")
        assert not lim.blocked("10.0.0.9")
        clock.now += 31.0  # two failures per window at most
    assert lim.total == 20


def test_memory_is_bounded_the_least_recently_failing_address_is_forgotten(clock):
    lim = FailureLimiter(burst=3, window=60.0, max_clients=4, clock=clock)
    lim.failed("10.0.0.1")
    lim.failed("10.0.0.1")  # one more would block it
    for i in range(2, 6):  # four other addresses push it out
        lim.failed(f"10.0.0.{i}")
    assert not lim.failed("10.0.0.1")  # counted from 0 again
    assert not lim.blocked("10.0.0.1")
    # while the most recent ones are remembered: two more failures block 10.0.0.5
    lim.failed("10.0.0.5")
    assert lim.failed("10.0.0.5")
    assert lim.blocked("10.0.0.5")


def test_memory_stays_bounded_under_a_flood_of_addresses(clock):
    lim = FailureLimiter(burst=5, window=60.0, max_clients=256, clock=clock)
    for i in range(10_000):
        lim.failed(f"fd00::{i:x}")
    assert len(lim._seen) == 256
    assert lim.total == 10_000
