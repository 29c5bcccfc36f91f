# Sourced by the scripts in this folder: `need PROGRAM=DEBIAN_PACKAGE...` returns when every
# program is on PATH, and otherwise exits 2 naming each missing program and the one apt-get
# command that installs them all (the scripts install nothing themselves: they measure).
need() {
    local missing=() pkgs=() t
    for t in "$@"; do
        command -v "${t%%=*}" >/dev/null && continue
        missing+=("${t%%=*}")
        [[ " ${pkgs[*]} " == *" ${t#*=} "* ]] || pkgs+=("${t#*=}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "$(basename "$0"): not installed: ${missing[*]}. Install with:" >&2
    echo "    apt-get install ${pkgs[*]}" >&2
    exit 2
}
