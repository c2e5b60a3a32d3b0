#!/usr/bin/env bash
# Packs what a GPU device machine (no registry there; Python 3.12 with its own torch) lacks for
# the node stage of benchmarks/gpu_oneshot.sh, into .whl/ (ignored through .git/info/exclude;
# name it in the device call's carry):
#   .whl/ros312.tar.xz   ROS 2 Kilted wheels (runtime + rosidl build tools) and rosbags for
#                        CPython 3.12, stored uncompressed inside one xz archive (about 29 MB
#                        instead of 52 MB of wheels: the call carries 64 MiB with the tree)
# Packages the device image already has (numpy, PyYAML, setuptools, packaging, ...) are left
# out. Run here, on a machine that reaches PyPI:  bash scripts/device_wheels.sh [PYVER]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pyver="${1:-3.12}"
tag="${pyver/./}"
py="${PYTHON:-$root/.venv/bin/python}"
out="$root/.whl"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say() { printf '[device_wheels] %s\n' "$*"; }

grep -qx '/.whl/' "$root/.git/info/exclude" 2>/dev/null || echo '/.whl/' >> "$root/.git/info/exclude"
mkdir -p "$out" "$work/dl" "$work/stored"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64; do
  platforms+=(--platform "$p")
done
# empy (rosidl's template engine) is published as a source archive only: build its wheel here.
say 'building the empy wheel'
"$py" -m pip wheel -q --no-deps -w "$work/dl" 'empy==4.2.1'
say "downloading ROS 2 Kilted + rosbags wheels for CPython $pyver"
"$py" -m pip download -q --only-binary=:all: --find-links "$work/dl" --python-version "$pyver" \
  --implementation cp "${platforms[@]}" -d "$work/dl" -r "$root/requirements/ros-kilted.txt" rosbags

say 'repacking (stored zips, then one xz archive)'
"$py" - "$work/dl" "$work/stored" <<'EOF'
import sys
import zipfile
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
# On the device image already (its own versions): not carried.
skip = ('numpy-', 'setuptools-', 'pyyaml-', 'packaging-', 'tzdata-', 'typing_extensions-',
        'pyparsing-', 'python_dateutil-')
for whl in sorted(src.glob('*.whl')):
    if whl.name.lower().startswith(skip):
        continue
    with zipfile.ZipFile(whl) as zin, zipfile.ZipFile(dst / whl.name, 'w', zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            info.compress_type = zipfile.ZIP_STORED
            zout.writestr(info, data)
EOF
XZ_OPT="${XZ_OPT:--6 -T0}" tar -cJf "$out/ros$tag.tar.xz.tmp" -C "$work/stored" .
mv "$out/ros$tag.tar.xz.tmp" "$out/ros$tag.tar.xz"
tree_mb=$(git -C "$root" ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
pack_mb=$(du -cb "$out"/* | tail -1 | cut -f1)
say "wrote $out/ros$tag.tar.xz ($(ls "$work/stored" | wc -l) wheels)"
say "carried: tracked tree $((tree_mb / 1048576)) MiB + .whl $((pack_mb / 1048576)) MiB (limit 64 MiB)"
