# Sourced by run.sh and test.sh: installs what the project needs on a fresh Debian machine,
# then skips every step that is already done. Usage: source platform/bootstrap.sh [run|test]
set -euo pipefail
_mode="${1:-run}"
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_apt_packages=(libfluidsynth3 fluidr3mono-gm-soundfont)
[ "$_mode" = test ] && _apt_packages+=(chromium)
_missing=()
for _pkg in "${_apt_packages[@]}"; do
  dpkg -s "$_pkg" >/dev/null 2>&1 || _missing+=("$_pkg")
done
if [ ${#_missing[@]} -gt 0 ]; then
  echo "==> Installing Debian packages: ${_missing[*]}"
  _sudo=""
  [ "$(id -u)" -ne 0 ] && _sudo="sudo"
  $_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -qq --no-install-recommends "${_missing[@]}" >/dev/null
fi

_python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$_root/.venv/bin/python" ]; then
  echo "==> Creating the virtual environment in .venv"
  "$_python" -m venv "$_root/.venv"
fi
_extra=""
[ "$_mode" = test ] && _extra="[test]"
_stamp="$_root/.venv/.installed-$(sha256sum "$_root/pyproject.toml" | cut -c1-16)-${_mode}"
if [ ! -f "$_stamp" ]; then
  echo "==> Installing Python packages (torch is the local CPU wheel)"
  # torch first and pinned, so nothing below can pull the multi-GB CUDA build.
  # pip compiles each installed file on one core (a third of the install's time). Compile
  # on every core instead, and skip what nothing here imports: transformers' other model
  # families (over 550), the dependencies' own test suites, pip and setuptools. A file that
  # does not compile fails its import anyway, so compileall's status is not checked (torch
  # ships test helpers in Python 3.12 syntax; pip skips them too).
  "$_root/.venv/bin/pip" install --quiet --disable-pip-version-check --no-compile torch==2.13.0
  "$_root/.venv/bin/pip" install --quiet --disable-pip-version-check --no-compile -e "$_root$_extra"
  _site="$("$_root/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  _skip='/(transformers/models/(?!(auto|bert|musicgen|encodec|t5|encoder_decoder)/)|torch/testing/_internal/|pip/|setuptools/|tests/)'
  "$_root/.venv/bin/python" -m compileall -q -j 0 -x "$_skip" "$_site" >/dev/null || true
  touch "$_stamp"
fi
export PATH="$_root/.venv/bin:$PATH"
