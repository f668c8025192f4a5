#!/usr/bin/env bash
# Install or remove edged as a systemd service. Called by `sudo make install` /
# `sudo make uninstall`; both are idempotent. See README.md, Deployment.
#
#   install    checks that every program the unit runs exists here, then: virtualenv in
#              $PREFIX (with the system's site-packages, so Raspberry Pi OS's
#              python3-picamera2 is importable), the README in $PREFIX/share/doc/edged (the
#              unit's Documentation=), console scripts in $BINDIR, the unit in $UNITDIR,
#              /etc/edged/edged.toml only if there is none, systemctl daemon-reload
#              (and try-restart, so an update takes effect if the service runs).
#   uninstall  stops and disables the service, removes all of the above except the
#              configuration (/etc/edged) and the model (/var/lib/edged).
#
# Variables (make passes them through): DESTDIR (staging root: nothing outside it is
# touched, paths written into files stay final), PREFIX=/opt/edged, BINDIR=/usr/local/bin,
# UNITDIR=/usr/local/lib/systemd/system (a `systemctl edit --full` copy in /etc wins over
# it, so admins' edits survive updates), PYTHON=python3, PACKAGE (what pip installs;
# default: this source tree), EXTRAS=systemd, PIP_INSTALL_ARGS (extra pip arguments),
# SYSTEMCTL (default: systemctl when systemd runs, else skipped), SYSTEM_DEPS (default:
# tools/system-deps; "true" skips it).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PREFIX=${PREFIX:-/opt/edged}
PREFIX=${PREFIX%/}
BINDIR=${BINDIR:-/usr/local/bin}
UNITDIR=${UNITDIR:-/usr/local/lib/systemd/system}
PYTHON=${PYTHON:-python3}
PACKAGE=${PACKAGE:-$SRC}
EXTRAS=${EXTRAS-systemd}
PIP_INSTALL_ARGS=${PIP_INSTALL_ARGS:-}
SYSTEM_DEPS=${SYSTEM_DEPS:-$SRC/tools/system-deps}
CONFDIR=/etc/edged
MODEL=/var/lib/edged/trainer.yml
UNIT=edged.service
SCRIPTS=(edged edged-train)
MARKER=.installed-by-edged # in $PREFIX: uninstall removes only a tree that has it

TEMPS=()
trap 'rm -rf ${TEMPS[@]+"${TEMPS[@]}"}' EXIT
# scratch VAR [-d]: a temporary file (directory) in VAR, removed however the script ends.
scratch() {
	local t
	t=$(mktemp "${@:2}")
	TEMPS+=("$t")
	printf -v "$1" '%s' "$t"
}

say() { printf 'edged: %s\n' "$*" >&2; }
die() {
	say "error: $*"
	exit 1
}

if [ -z "${SYSTEMCTL:-}" ]; then
	if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
		SYSTEMCTL=systemctl
	else
		SYSTEMCTL=:
	fi
fi

systemctl_() {
	if [ "$SYSTEMCTL" = : ]; then
		say "systemd is not running here: skipped systemctl $*"
	else
		"$SYSTEMCTL" "$@"
	fi
}

check() {
	case "$PREFIX" in
	/*/*) ;;
	*) die "PREFIX=$PREFIX: give an absolute path at least two levels deep (like /opt/edged)" ;;
	esac
	if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
		die "run as root: sudo make $1 (or set DESTDIR to stage the files somewhere else)"
	fi
}

unit_programs_exist() {
	# Every program the unit runs must be here, or systemd finds out only when it needs it
	# (ExecReload=/bin/kill on an image without procps: a reload that never happens).
	# Ours (under /opt/edged) are installed below; the others are looked for on this
	# machine, also with DESTDIR (a staging root holds only what this script puts there).
	local key value cmd
	while IFS='=' read -r key value; do
		case "$key" in Exec*) ;; *) continue ;; esac
		while case "$value" in [-@:+!]*) true ;; *) false ;; esac; do
			value=${value:1} # systemd's prefixes: - @ : + ! !!
		done
		cmd=${value%%[[:space:]]*}
		case "$cmd" in /opt/edged/*) continue ;; esac
		if [ "${cmd#/}" = "$cmd" ]; then
			command -v "$cmd" >/dev/null || die "$UNIT runs $cmd ($key), which is not installed here"
		elif [ ! -x "$cmd" ] || [ -d "$cmd" ]; then
			die "$UNIT runs $cmd ($key), which is not installed here"
		fi
	done <"$SRC/deploy/$UNIT"
}

venv_python() {
	# Reuse the virtualenv on an update; recreate it when the system's Python is another
	# version now (a distribution upgrade) or the venv cannot see the system packages.
	local venv=$DESTDIR$PREFIX py=$DESTDIR$PREFIX/bin/python want have
	want=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
		die "cannot run $PYTHON (set PYTHON=/path/to/python3)"
	have=$(sed -n 's/^version\(_info\)\{0,1\} *= *\([0-9]*\.[0-9]*\).*/\2/p' "$venv/pyvenv.cfg" 2>/dev/null || :)
	if [ "$have" = "$want" ] && [ -x "$py" ] && "$py" -c '' 2>/dev/null &&
		grep -qs '^include-system-site-packages *= *true' "$venv/pyvenv.cfg"; then
		return
	fi
	if [ -e "$venv" ] && [ ! -e "$venv/$MARKER" ] && [ -n "$(ls -A "$venv")" ]; then
		die "$venv exists and was not made by edged's installer: move it away or choose PREFIX"
	fi
	say "creating the virtualenv $venv (with system site-packages, for picamera2)"
	rm -rf "$venv"
	"$PYTHON" -m venv --system-site-packages "$venv" ||
		die "cannot create a virtualenv with $PYTHON (on Debian: apt install python3-venv)"
	touch "$venv/$MARKER"
}

pip_install() {
	local py=$DESTDIR$PREFIX/bin/python package=$PACKAGE spec constraints=() build
	if [ "$package" = "$SRC" ]; then
		# Build from a copy: an in-tree build as root would leave root-owned build/ and
		# *.egg-info in the admin's checkout, breaking their next `make` as themselves.
		scratch build -d
		tar -C "$SRC" --exclude=__pycache__ -cf - pyproject.toml README.md edged |
			tar -C "$build" -xf -
		package=$build
	fi
	spec=$package
	[ -n "$EXTRAS" ] && spec="$package[$EXTRAS]"
	# picamera2 (apt) uses the system's numpy through compiled modules: a newer numpy
	# from PyPI in the virtualenv would shadow it and break them, so keep the system's.
	if "$PYTHON" -c 'import importlib.util as u, sys; sys.exit(not u.find_spec("picamera2"))' \
		2>/dev/null; then
		local numpy
		if numpy=$("$PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null); then
			local pins
			scratch pins
			echo "numpy==$numpy" >"$pins"
			constraints=(-c "$pins")
			say "picamera2 found: keeping the system's numpy $numpy (pip picks an OpenCV that fits)"
		fi
	fi
	say "installing edged${EXTRAS:+[$EXTRAS]} from $PACKAGE into $DESTDIR$PREFIX"
	# shellcheck disable=SC2086  # PIP_INSTALL_ARGS is a list of words on purpose
	if ! "$py" -m pip install --disable-pip-version-check ${constraints[@]+"${constraints[@]}"} \
		$PIP_INSTALL_ARGS "$spec"; then
		[ -n "$EXTRAS" ] || die "pip install failed (see above)"
		# systemd-python needs a compiler and libsystemd-dev; edged works without it.
		say "warning: installing with [$EXTRAS] failed; retrying without (sd_notify falls back to its own socket code)"
		# shellcheck disable=SC2086
		"$py" -m pip install --disable-pip-version-check ${constraints[@]+"${constraints[@]}"} \
			$PIP_INSTALL_ARGS "$package" || die "pip install failed (see above)"
	fi
	if [ -n "$DESTDIR" ]; then
		# Scripts must name the final interpreter, not the staging one.
		local f
		{ grep -rlIF -- "$DESTDIR$PREFIX" "$DESTDIR$PREFIX/bin" "$DESTDIR$PREFIX/pyvenv.cfg" || :; } |
			while IFS= read -r f; do
				sed -i "s#$DESTDIR$PREFIX#$PREFIX#g" "$f"
			done
	fi
}

install_config() {
	local dir=$DESTDIR$CONFDIR example=$SRC/config/edged.toml tmp out
	install -d -m 0755 "$dir"
	scratch tmp
	scratch out
	if [ ! -f "$example" ]; then
		# An older source tree: ask the installed program, else use a minimal file.
		if "$DESTDIR$PREFIX/bin/python" -m edged config example >"$tmp" 2>/dev/null; then
			example=$tmp
		else
			example=
		fi
	fi
	if [ -n "$example" ]; then
		install -m 0644 "$example" "$dir/edged.toml.example"
	fi
	if [ -e "$dir/edged.toml" ]; then
		say "keeping your $CONFDIR/edged.toml (new options: $CONFDIR/edged.toml.example)"
	else
		"$PYTHON" "$SRC/deploy/render_config.py" --model-path "$MODEL" ${example:+"$example"} \
			>"$out" || die "cannot write the example configuration"
		install -m 0644 "$out" "$dir/edged.toml"
		say "wrote $CONFDIR/edged.toml (model: $MODEL); set mqtt.host there"
	fi
}

do_install() {
	check install
	unit_programs_exist
	[ "$SYSTEM_DEPS" = true ] || "$SYSTEM_DEPS"
	venv_python
	pip_install
	install -d -m 0755 "$DESTDIR$BINDIR" "$DESTDIR$UNITDIR" "$DESTDIR$PREFIX/share/doc/edged"
	local s
	for s in "${SCRIPTS[@]}"; do
		[ -x "$DESTDIR$PREFIX/bin/$s" ] || die "pip did not install the $s script"
		ln -sfn "$PREFIX/bin/$s" "$DESTDIR$BINDIR/$s"
	done
	sed -e "s#/opt/edged#$PREFIX#g" "$SRC/deploy/$UNIT" >"$DESTDIR$UNITDIR/$UNIT.tmp"
	chmod 0644 "$DESTDIR$UNITDIR/$UNIT.tmp"
	mv -f "$DESTDIR$UNITDIR/$UNIT.tmp" "$DESTDIR$UNITDIR/$UNIT"
	# The unit's Documentation= (file://$PREFIX/share/doc/edged/README.md); gone with $PREFIX.
	install -m 0644 "$SRC/README.md" "$DESTDIR$PREFIX/share/doc/edged/README.md"
	install_config
	systemctl_ daemon-reload
	# An update: restart only if it was running (a stopped service stays stopped).
	systemctl_ try-restart "$UNIT"
	say "installed. Next: edit $CONFDIR/edged.toml, then: sudo systemctl enable --now edged"
}

do_uninstall() {
	check uninstall
	if [ -e "$DESTDIR$UNITDIR/$UNIT" ]; then
		systemctl_ disable --now "$UNIT" || say "warning: could not stop $UNIT (continuing)"
	fi
	rm -f "$DESTDIR$UNITDIR/$UNIT"
	local s
	for s in "${SCRIPTS[@]}"; do
		# Only our links: a file someone else put there stays.
		if [ "$(readlink "$DESTDIR$BINDIR/$s" 2>/dev/null)" = "$PREFIX/bin/$s" ]; then
			rm -f "$DESTDIR$BINDIR/$s"
		fi
	done
	if [ -e "$DESTDIR$PREFIX/$MARKER" ]; then
		rm -rf "$DESTDIR$PREFIX"
	elif [ -e "$DESTDIR$PREFIX" ]; then
		say "warning: $DESTDIR$PREFIX was not made by this installer: left alone"
	fi
	rm -f "$DESTDIR$CONFDIR/edged.toml.example"
	systemctl_ daemon-reload
	say "removed. Kept: $CONFDIR (configuration) and /var/lib/edged (the model)"
}

case "${1:-}" in
install) do_install ;;
uninstall) do_uninstall ;;
*)
	echo "usage: $0 install|uninstall   (normally: sudo make install / sudo make uninstall)" >&2
	exit 2
	;;
esac
