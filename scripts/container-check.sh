#!/usr/bin/env bash
# Build the grand-challenge image from ./Dockerfile and check it against the host:
#   1. a base image: $BASE if given (e.g. BASE=python:3.11-slim where a registry is reachable), else a local
#      one made without any registry: a minimal Debian bookworm root (debootstrap from a Debian mirror) with
#      Debian's python3 in a venv at /opt/venv (`python` and pip on PATH), imported as $BASE_IMAGE (reused
#      when it already exists);
#   2. the image, `--build-arg BASE=...`; with podman, the host's local wheel folders ($LOCAL_WHEELS, the ones
#      that exist) are mounted into the build read-only and made a pip index, and the host's installed
#      versions (`pip freeze`) are the build's constraints (PIP_CONFIG_FILE), so the container runs the host's
#      torch and numpy; with docker, the Dockerfile's defaults (public indexes, CPU torch);
#   3. runs it on each example stack (the one shipped in the package, and the MIDOG 2025 example when present)
#      laid out as INPUT/images/stacked-histopathology-roi-cropouts/<file>.tiff, with --network none, /input
#      read-only, a read-only root file system (only /tmp writable), all capabilities dropped, as the image's
#      non-root user;
#   4. compares the JSON with `mitotype challenge` on the host: same length and classes, confidences within
#      $TOLERANCE. Prints PASS/FAIL per stack and overall; exits 1 on any mismatch, 2 on a setup error.
#
# Usage: scripts/container-check.sh            (podman, else docker: whichever answers)
# Settings (environment): ENGINE, BASE, BASE_IMAGE, IMAGE, WORK (scratch folder, default /tmp/mitotype-container),
#   LOCAL_WHEELS, HOST_CA, DEBIAN_MIRROR, TOLERANCE, MODEL (as the Dockerfile's; default: the shipped model), NICE,
#   NO_CACHE=1 (rebuild every layer).
# Making the local base needs root and debootstrap. Podman on a VM without some capabilities may need, in
# /etc/containers/containers.conf: [containers] default_ulimits = []  and  [engine] runtime = "runc".
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-/tmp/mitotype-container}"
IMAGE="${IMAGE:-localhost/mitotype-midog25:check}"
BASE_IMAGE="${BASE_IMAGE:-localhost/mitotype-base:bookworm-py311}"
BASE="${BASE:-}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
LOCAL_WHEELS="${LOCAL_WHEELS-/opt/wheels /opt/pypi/files /opt/pypi-more/files}"
TOLERANCE="${TOLERANCE:-1e-6}"
MODEL="${MODEL:-src/mitotype/assets/default.pt}"
NICE="${NICE-nice -n 19}"
HOST_CA="${HOST_CA:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}"
MIDOG_EXAMPLE="${MIDOG_EXAMPLE:-$REPO/../shared/data/midog25-track2-example/input/stack_5.tiff}"
export HF_HUB_OFFLINE=1

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*"; exit 2; }
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }

# --- the engine ------------------------------------------------------------------------------------------
if [[ -z "${ENGINE:-}" ]]; then
    for e in podman docker; do
        if command -v "$e" > /dev/null && "$e" info > /dev/null 2>&1; then ENGINE="$e"; break; fi
    done
fi
[[ -n "${ENGINE:-}" ]] || die "no working container engine (podman or docker); e.g. apt-get install -y podman"
log "engine: $("$ENGINE" --version)"
command -v mitotype > /dev/null && python3 -c "import mitotype" 2> /dev/null \
    || die "mitotype is not installed on the host's python3 (pip install -e .)"
mkdir -p "$WORK"

# --- 1. the base image -----------------------------------------------------------------------------------
if [[ -z "$BASE" ]]; then
    BASE="$BASE_IMAGE"
    if "$ENGINE" image inspect "$BASE" > /dev/null 2>&1; then
        log "base: reusing $BASE"
    else
        [[ $EUID -eq 0 ]] || die "making the local base image needs root (debootstrap); or give BASE=..."
        command -v debootstrap > /dev/null || die "debootstrap not found (apt-get install -y debootstrap)"
        rootfs="$WORK/rootfs"
        rm -rf "$rootfs"
        log "base: debootstrap bookworm (minbase + python3, python3-venv, ca-certificates) from $DEBIAN_MIRROR"
        t0=$(now)
        $NICE debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" "$DEBIAN_MIRROR" > "$WORK/debootstrap.log" 2>&1 \
            || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
        chroot "$rootfs" /usr/bin/python3 -m venv /opt/venv
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
            "$rootfs"/var/log/* "$rootfs"/tmp/*
        tar --numeric-owner -C "$rootfs" -cf - . | "$ENGINE" import \
            --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' --change 'CMD ["python"]' - "$BASE" > /dev/null
        rm -rf "$rootfs"
        log "base: imported $BASE in $(secs "$t0" "$(now)") s"
    fi
fi
log "base: $("$ENGINE" run --rm --network none "$BASE" python --version 2>&1)"

# --- 2. the image ----------------------------------------------------------------------------------------
build=(build --platform linux/amd64 -t "$IMAGE" --build-arg "BASE=$BASE"
       --build-arg "MODEL=$MODEL")
[[ -n "${NO_CACHE:-}" ]] && build+=(--no-cache)  # e.g. after the host's packages changed (mounts are not cache keys)
if [[ "$ENGINE" == podman ]]; then
    # podman mounts folders into the build: a pip.conf with a PEP 503 index of the host's wheel folders as the
    # extra index after PyPI (when both offer the same file, pip 23 takes it from the last index: checked with
    # `pip download -vv`; PyPI only serves what is missing locally),
    # the host's versions (`pip freeze`) as constraints, so the container computes what the host computes, and
    # the host's CA bundle (for a TLS-intercepting proxy)
    build+=(--pull=never)
    rm -rf "$WORK/pip" && mkdir -p "$WORK/pip"
    python3 -m pip freeze --exclude-editable 2> /dev/null | grep -v -e ' @ ' -e '^-e ' -e '^mitotype=' \
        > "$WORK/pip/constraints.txt"
    printf '[global]\nconstraint = /opt/host-pip/constraints.txt\n' > "$WORK/pip/pip.conf"
    links=()
    for d in $LOCAL_WHEELS; do
        [[ -d "$d" ]] && { build+=(-v "$d:$d:ro"); links+=("$d"); }
    done
    if ((${#links[@]})); then
        n=$(python3 - "$WORK/pip/simple" "${links[@]}" <<'EOF_INDEX'
import html, pathlib, re, sys
root, folders = pathlib.Path(sys.argv[1]), sys.argv[2:]
projects = {}
for folder in folders:
    for whl in sorted(pathlib.Path(folder).glob("*.whl")):
        projects.setdefault(re.sub(r"[-_.]+", "-", whl.name.split("-")[0]).lower(), []).append(whl)
for name, files in projects.items():
    (root / name).mkdir(parents=True, exist_ok=True)
    links = "".join(f'<a href="file://{html.escape(str(f))}">{html.escape(f.name)}</a>\n' for f in files)
    (root / name / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
print(sum(len(f) for f in projects.values()))
EOF_INDEX
        )
        printf 'extra-index-url = file:///opt/host-pip/simple\n' >> "$WORK/pip/pip.conf"
        build+=(--build-arg "TORCH_INDEX=https://pypi.org/simple")  # torch: the host's version, local file
        log "build: $n local wheels from ${links[*]} as an index"
    fi
    if [[ -f "$HOST_CA" ]]; then
        cp "$HOST_CA" "$WORK/pip/ca.crt"
        printf 'cert = /opt/host-pip/ca.crt\n' >> "$WORK/pip/pip.conf"
    fi
    build+=(-v "$WORK/pip:/opt/host-pip:ro" --build-arg "PIP_CONFIG_FILE=/opt/host-pip/pip.conf")
    log "build: pip.conf for the build: $(tr '\n' ' ' < "$WORK/pip/pip.conf")"
fi
# a snapshot of what the image needs, so that edits made during the build cannot mix into it
ctx="$WORK/context"
rm -rf "$ctx" && mkdir -p "$ctx"
(cd "$REPO" && cp -r --parents pyproject.toml README.md Dockerfile .dockerignore src "$MODEL" "$ctx"/)
log "build: $ENGINE ${build[*]} $ctx  (snapshot of $REPO)"
old_id=$("$ENGINE" image inspect --format '{{.Id}}' "$IMAGE" 2> /dev/null || true)
t0=$(now)
$NICE "$ENGINE" "${build[@]}" "$ctx" > "$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log"; die "build failed (log: $WORK/build.log)"; }
grep -E '^model ok' "$WORK/build.log" | sed 's/^/    /' || true
if grep -q '^Successfully installed' "$WORK/build.log"; then  # layers not taken from the cache
    log "build: pip took $(grep '^Processing /' "$WORK/build.log" | grep -c -v -E '^Processing /(build|tmp)/' || true) wheels from local folders," \
        "downloaded $(grep -c '^ *Downloading ' "$WORK/build.log" || true)"
fi
new_id=$("$ENGINE" image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then  # the previous check image, now untagged
    "$ENGINE" rmi "$old_id" > /dev/null 2>&1 || true
fi
size=$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE")
log "build: $IMAGE built in $(secs "$t0" "$(now)") s, size $(python3 -c "print(f'{$size / 1e9:.2f} GB')")"

user=$("$ENGINE" image inspect --format '{{.Config.User}}' "$IMAGE")
uid=$("$ENGINE" run --rm --network none --entrypoint id "$IMAGE" -u)
log "image: runs as user '$user' (uid $uid)"
[[ -n "$user" && "$uid" != 0 ]] || { log "FAIL: the image runs as root"; exit 1; }
models=$("$ENGINE" run --rm --network none --user 0 --entrypoint sh "$IMAGE" -c \
    'find / -xdev -type f \( -name "*.pt" -o -name "*.pth" -o -name "*.ckpt" -o -name "*.safetensors" \) -size +1M')
log "image: model files: $(echo $models)"
if [[ "$MODEL" == src/mitotype/assets/default.pt && "$models" != /opt/app/model.pt ]]; then
    log "FAIL: the image should hold the model once, as /opt/app/model.pt"; exit 1
fi

# --- 3./4. run on the example stacks and compare ---------------------------------------------------------
stacks=("$REPO/src/mitotype/assets/example/amibr_test_stack.tiff")
[[ -f "$MIDOG_EXAMPLE" ]] && stacks+=("$(cd "$(dirname "$MIDOG_EXAMPLE")" && pwd)/$(basename "$MIDOG_EXAMPLE")")
host_model="$REPO/$MODEL"
[[ "$MODEL" == src/mitotype/assets/default.pt ]] && host_model=default
status=0
for stack in "${stacks[@]}"; do
    name=$(basename "$stack" .tiff)
    job="$WORK/jobs/$name"
    rm -rf "$job"
    mkdir -p "$job/input/images/stacked-histopathology-roi-cropouts" "$job/host" "$job/container"
    cp "$stack" "$job/input/images/stacked-histopathology-roi-cropouts/$name.tiff"
    chmod -R a+rX "$job/input"
    chmod 777 "$job/container"  # the container's non-root user writes here

    t0=$(now)
    $NICE mitotype challenge --input "$job/input" --output "$job/host" --model "$host_model" \
        > "$job/host.log" 2>&1 || { cat "$job/host.log"; die "$name: mitotype challenge on the host failed"; }
    t_host=$(secs "$t0" "$(now)")
    t0=$(now)
    $NICE "$ENGINE" run --rm --network none --read-only --tmpfs /tmp --cap-drop ALL \
        --security-opt no-new-privileges -v "$job/input:/input:ro" -v "$job/container:/output" "$IMAGE" \
        > "$job/container.log" 2>&1 || { cat "$job/container.log"; log "FAIL: $name: the container failed"; status=1; continue; }
    t_cont=$(secs "$t0" "$(now)")
    log "$name: host ${t_host} s, container ${t_cont} s (start to exit, $(python3 -c \
        "import tifffile, sys; print(len(tifffile.TiffFile(sys.argv[1]).pages))" "$stack") crops)"
    if python3 - "$job/host/multiple-mitotic-figure-classification.json" \
        "$job/container/multiple-mitotic-figure-classification.json" "$TOLERANCE" "$name" <<'EOF'
import json, sys
host_path, cont_path, tol, name = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
raw_host, raw_cont = open(host_path, "rb").read(), open(cont_path, "rb").read()
host, cont = json.loads(raw_host), json.loads(raw_cont)
problems = []
if len(host) != len(cont):
    problems.append(f"{len(host)} host entries vs {len(cont)} container entries")
diff = 0.0
for i, (h, c) in enumerate(zip(host, cont)):
    if set(h) != set(c) or h["class"] != c["class"]:
        problems.append(f"page {i}: host {h} vs container {c}")
    diff = max(diff, abs(float(h["confidence"]) - float(c["confidence"])))
if diff > tol:
    problems.append(f"max |confidence difference| {diff:.3g} > {tol:g}")
n_atyp = sum(e["class"] == "atypical" for e in cont)
verdict = "FAIL" if problems else "PASS"
print(f"{verdict}: {name}: {len(cont)} entries ({n_atyp} atypical), byte-identical: {raw_host == raw_cont}, "
      f"max |confidence difference| {diff:.3g}")
for p in problems:
    print("    " + p)
sys.exit(1 if problems else 0)
EOF
    then :; else status=1; fi
done

if ((status)); then log "FAIL: the container's output differs from the host's"; else
    log "PASS: the container ($IMAGE, $(python3 -c "print(f'{$size / 1e9:.2f} GB')")) gives the host's output"; fi
exit "$status"
