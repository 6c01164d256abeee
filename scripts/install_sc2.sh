#!/usr/bin/env bash
# Install StarCraft II 4.10 (Blizzard's headless Linux package) and the SMAC + SMACv2 maps into
# $SC2PATH (default ~/StarCraftII), for marlopt's env=smac / env=smacv2.
#
#   bash scripts/install_sc2.sh              # game + maps into ${SC2PATH:-~/StarCraftII}
#   bash scripts/install_sc2.sh --maps-only  # only (re)install the maps
#   bash scripts/install_sc2.sh --python     # also pip-install smac and smacv2 from GitHub
#   SC2PATH=/data/StarCraftII bash scripts/install_sc2.sh
#
# Downloading StarCraft II means accepting Blizzard's AI and Machine Learning License
# (https://blzdistsc2-a.akamaihd.net/AI_AND_MACHINE_LEARNING_LICENSE.html): the archive's password
# "iagreetotheeula" is that acceptance. The game needs ~4 GB download and ~8 GB while unpacking.
# Neither smac nor smacv2 is on PyPI ("pip install smac" installs SMAC3, an unrelated optimiser).
set -euo pipefail

SC2PATH="${SC2PATH:-$HOME/StarCraftII}"
SC2_VERSION="4.10"
SC2_BUILD="Base75689"
SC2_URL="https://blzdistsc2-a.akamaihd.net/Linux/SC2.${SC2_VERSION}.zip"
SC2_PASSWORD="iagreetotheeula"
SMAC_MAPS_URL="https://github.com/oxwhirl/smac/releases/download/v0.1-beta1/SMAC_Maps.zip"
SMACV2_MAPS_URL="https://github.com/oxwhirl/smacv2/releases/download/maps/SMAC_Maps.zip"
SMAC_PIP="smac @ git+https://github.com/oxwhirl/smac.git"
SMACV2_PIP="smacv2 @ git+https://github.com/oxwhirl/smacv2.git"

maps_only=0
python_pkgs=0
for arg in "$@"; do
    case "$arg" in
        --maps-only) maps_only=1 ;;
        --python) python_pkgs=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install_sc2.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

say() { printf '[install_sc2] %s\n' "$*"; }
die() { printf '[install_sc2] error: %s\n' "$*" >&2; exit 1; }

for tool in unzip; do
    command -v "$tool" >/dev/null || die "'$tool' is required (e.g. apt-get install $tool)"
done
if command -v wget >/dev/null; then
    fetch() { wget -q --show-progress -O "$2" "$1"; }
elif command -v curl >/dev/null; then
    fetch() { curl -fL --progress-bar -o "$2" "$1"; }
else
    die "wget or curl is required"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/install_sc2.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$SC2PATH"
SC2PATH="$(cd "$SC2PATH" && pwd)"

# -- the game -------------------------------------------------------------------------------------
if [[ $maps_only -eq 0 ]]; then
    if compgen -G "$SC2PATH/Versions/Base*/SC2_x64" >/dev/null; then
        say "StarCraft II already installed in $SC2PATH ($(basename "$(dirname "$(compgen -G "$SC2PATH/Versions/Base*/SC2_x64" | head -n1)")"))"
    else
        avail_kb="$(df -Pk "$tmp" | awk 'NR==2 {print $4}')"
        if [[ -n "$avail_kb" && "$avail_kb" -lt 9000000 ]]; then
            die "need ~9 GB free under ${TMPDIR:-/tmp} to download and unpack StarCraft II (set TMPDIR)"
        fi
        say "downloading StarCraft II $SC2_VERSION for Linux ($SC2_URL)"
        fetch "$SC2_URL" "$tmp/SC2.zip"
        say "unpacking (accepting the AI and Machine Learning License)"
        unzip -q -P "$SC2_PASSWORD" "$tmp/SC2.zip" -d "$tmp/game"
        rm -f "$tmp/SC2.zip"
        [[ -d "$tmp/game/StarCraftII" ]] || die "unexpected archive layout (no StarCraftII/ folder)"
        cp -a "$tmp/game/StarCraftII/." "$SC2PATH/"
        rm -rf "$tmp/game"
        chmod +x "$SC2PATH"/Versions/Base*/SC2_x64 || true
        say "StarCraft II installed in $SC2PATH"
    fi
fi

# -- the maps -------------------------------------------------------------------------------------
install_maps() {  # url name
    local url="$1" name="$2"
    say "downloading the $name maps ($url)"
    fetch "$url" "$tmp/$name.zip"
    mkdir -p "$tmp/$name"
    unzip -q -o "$tmp/$name.zip" -d "$tmp/$name"
    # the archives are either SMAC_Maps/*.SC2Map or flat *.SC2Map: take every map file
    local count=0
    while IFS= read -r -d '' map; do
        cp -f "$map" "$SC2PATH/Maps/SMAC_Maps/"
        count=$((count + 1))
    done < <(find "$tmp/$name" -name '*.SC2Map' -print0)
    [[ $count -gt 0 ]] || die "no .SC2Map files in $url"
    say "$count $name map files installed"
}
mkdir -p "$SC2PATH/Maps/SMAC_Maps"
install_maps "$SMAC_MAPS_URL" smac
install_maps "$SMACV2_MAPS_URL" smacv2

# -- check ----------------------------------------------------------------------------------------
missing=()
for map in 3m MMM2 5m_vs_6m corridor 32x32_flat; do
    [[ -f "$SC2PATH/Maps/SMAC_Maps/$map.SC2Map" ]] || missing+=("$map")
done
[[ ${#missing[@]} -eq 0 ]] || die "maps missing after install: ${missing[*]}"
if [[ $maps_only -eq 0 ]] && ! compgen -G "$SC2PATH/Versions/Base*/SC2_x64" >/dev/null; then
    die "no game binary under $SC2PATH/Versions/Base*/SC2_x64"
fi
[[ -d "$SC2PATH/Versions/$SC2_BUILD" ]] || say "note: build $SC2_BUILD (4.10) not found; pysc2 uses the newest build present"

# -- python packages (optional) ---------------------------------------------------------------------
if [[ $python_pkgs -eq 1 ]]; then
    say "installing smac and smacv2 from GitHub"
    python -m pip install "$SMAC_PIP" "$SMACV2_PIP"
fi

say "done. Add this to your shell profile:"
echo "export SC2PATH=\"$SC2PATH\""
if [[ $python_pkgs -eq 0 ]]; then
    say "python packages (not on PyPI): pip install \"$SMAC_PIP\"   and/or   pip install \"$SMACV2_PIP\""
fi
