"""``edged config check`` and ``edged config example``: settings for people to read."""

from __future__ import annotations

import argparse
import ssl
import sys
from pathlib import Path

from edged.commands.run import tls_context, web_password
from edged.errors import ConfigError, ExitStatus, RedactingArgumentParser
from edged.mqtt.client import resolve_password
from edged.settings import MqttSettings, dump_toml, example_toml, load_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "config",
        help="check the settings, or print an example settings file",
        description="Settings come from (lowest first): defaults < --config FILE < "
        "environment (EDGED_SECTION__KEY) < command-line flags.",
    )
    cmds = p.add_subparsers(
        dest="config_command", metavar="ACTION", required=True, parser_class=RedactingArgumentParser
    )
    check = cmds.add_parser(
        "check",
        help="validate the settings and print the effective values (secrets masked)",
        description="Validate defaults + FILE + EDGED_* environment and print the result as "
        "TOML, passwords shown as ***. Exits 78 (EX_CONFIG) naming every bad field, "
        "its value and the reason.",
    )
    check.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    check.set_defaults(func=check_config)
    example = cmds.add_parser(
        "example",
        help="print a settings file documenting every option at its default",
        description="Every option, commented out at its default, with what it does. "
        "Example: edged config example > /etc/edged/edged.toml",
    )
    example.set_defaults(func=print_example)


def check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)  # ConfigError -> exit 78, every bad field named
    web_password(settings.http)  # a page open to the network without a password: exit 78
    tls_context(settings.http)  # a certificate or key that does not load: exit 78
    check_mqtt_files(settings.mqtt)  # the broker's password file and TLS files: exit 78
    source = f"{args.config}" if args.config else "defaults (no --config)"
    print(f"# effective settings: {source} + EDGED_* environment; secrets masked")
    print(dump_toml(settings))
    state = settings.privacy.state_file
    if state is not None and not state.parent.is_dir():
        print(
            f"edged: note: privacy.state_file's folder {state.parent} does not exist: the "
            "privacy switch will start ON and forget its state at every restart",
            file=sys.stderr,
        )
    if not settings.model.path.exists():
        print(
            f"edged: note: model.path {settings.model.path} does not exist yet; the daemon "
            "will run and start classifying once it appears",
            file=sys.stderr,
        )
    print("edged: configuration OK", file=sys.stderr)
    return ExitStatus.OK


def check_mqtt_files(m: MqttSettings) -> None:
    """Every file `edged run` would open for the broker, opened now: a `ConfigError`
    naming the setting when one is missing or unusable (not only at ``run``)."""
    resolve_password(m)
    ctx = ssl.create_default_context()
    try:
        if m.ca_file is not None:
            what = f"mqtt.ca_file: cannot load {m.ca_file}"
            ctx.load_verify_locations(cafile=m.ca_file)
        if m.certfile is not None:
            what = f"mqtt.certfile/keyfile: cannot load {m.certfile}"
            ctx.load_cert_chain(m.certfile, m.keyfile)
    except (OSError, ssl.SSLError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{what}: {why}") from None


def print_example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_toml())
    return ExitStatus.OK
