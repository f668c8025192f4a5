"""Turn edged's example configuration into the one `make install` puts in /etc/edged.

The example has every option commented out at its default; the installed file must point
the daemon at the model in the state directory, so ``model.path`` is set (uncommented)
and everything else stays as documented. Standard library only: it runs with the
system's python3 before anything else is installed.

    python3 deploy/render_config.py [--model-path P] [EXAMPLE] > edged.toml
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

MODEL_PATH = "/var/lib/edged/trainer.yml"

HEADER = """\
# Written by `make install` because /etc/edged/edged.toml did not exist. It is yours now:
# `make install` never overwrites it, `make uninstall` keeps it. The current list of
# options, after an update: /etc/edged/edged.toml.example
"""

# Used only when no example can be found (a source tree without config/edged.toml).
FALLBACK = """\
[camera]
# "0" (first V4L2 device, e.g. a USB webcam), "/dev/video2", or "picamera2"
# (Raspberry Pi CSI camera through libcamera).
# source = "0"

[model]

[mqtt]
# host = "localhost"
# port = 1883
# username = "edged"
# The password comes from the systemd credential 'mqtt_password' (see the README).
"""

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*(#.*)?$")
_PATH_KEY = re.compile(r"^\s*#?\s*path\s*=")


def render(example: str, model_path: str = MODEL_PATH) -> str:
    """``example`` with ``[model] path`` set to ``model_path``; raises ValueError if unusable."""
    setting = f"path = {json.dumps(model_path)}"
    lines = example.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if (m := _SECTION.match(line)) and m[1] == "model"),
        None,
    )
    if start is None:
        lines += ["", "[model]", setting]
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if _SECTION.match(lines[i])), len(lines)
        )
        at = next((i for i in range(start + 1, end) if _PATH_KEY.match(lines[i])), None)
        if at is None:
            lines.insert(start + 1, setting)
        else:
            lines[at] = setting
    text = HEADER + "\n" + "\n".join(lines).rstrip("\n") + "\n"
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"the example configuration is not valid TOML: {e}") from None
    if parsed.get("model", {}).get("path") != model_path:
        raise ValueError("the example configuration sets model.path more than once")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("example", nargs="?", type=Path, help="example file (default: a minimal one)")
    p.add_argument("--model-path", default=MODEL_PATH, help="default: %(default)s")
    args = p.parse_args(argv)
    try:
        example = args.example.read_text(encoding="utf-8") if args.example else FALLBACK
        sys.stdout.write(render(example, args.model_path))
    except (OSError, ValueError) as e:
        print(f"render_config: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
