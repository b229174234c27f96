#!/usr/bin/env bash
# `make image-test`: run a built framepipe image the way a pod runs it, without a container
# runtime (podman run does not work on every machine; chroot does):
#   - the image's root filesystem (podman image mount), bind-mounted read-only
#     (readOnlyRootFilesystem), with a writable tmpfs on /tmp (the pods' emptyDir) and /dev/shm;
#   - as the image's own USER (a non-root UID), with the image's ENV and WORKDIR;
#   - in a private mount namespace (unshare), so nothing stays mounted if it stops half-way.
# It checks: framepipe --version is the project's version; `framepipe models check` runs the
# baked-in models; hls.js is there; no compiler is on the PATH; the root is not writable; and
# `framepipe run --source <sample> --once` (embedded NATS and every stage, all inside the image)
# writes a playlist with every frame of the sample and one detections line per frame.
# Needs root (podman image mount, mount, chroot). Usage: docker/image_smoke.sh IMAGE [SECONDS]
set -euo pipefail
image="${1:?usage: $0 IMAGE [SAMPLE_SECONDS]}"
seconds="${2:-4}"

[ "$(id -u)" = 0 ] || { echo "error: run as root (podman image mount, chroot)" >&2; exit 2; }
podman image exists "$image" || { echo "error: no image $image: run \`make image\` first" >&2; exit 2; }

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$(dirname "$0")/../pyproject.toml")"
user="$(podman image inspect --format '{{.Config.User}}' "$image")"
workdir="$(podman image inspect --format '{{.Config.WorkingDir}}' "$image")"
mapfile -t image_env < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed '/^$/d')
case "${user%%:*}" in
  "" | 0 | root) echo "error: $image runs as root (USER ${user:-unset}); the pods need a non-root UID" >&2; exit 1 ;;
esac

rootfs="$(podman image mount "$image")"
trap 'podman image umount "$image" >/dev/null' EXIT
jail="$(mktemp -d /tmp/framepipe-image-test.XXXXXX)"
trap 'podman image umount "$image" >/dev/null; rmdir "$jail" 2>/dev/null || true' EXIT
echo "image $image (USER $user, WORKDIR $workdir), root filesystem read-only at $jail"

# One script inside a private mount namespace: its mounts go away with it.
unshare --mount --propagation private bash -euo pipefail -s -- "$rootfs" "$jail" "$user" "$workdir" \
  "$seconds" "$version" "${image_env[@]}" <<'OUTER'
rootfs="$1" jail="$2" user="$3" workdir="$4" seconds="$5" version="$6"
shift 6
mount --bind "$rootfs" "$jail"
mount -o remount,bind,ro "$jail"
mount -t tmpfs -o mode=1777,size=2g tmpfs "$jail/tmp"
mount -t proc proc "$jail/proc"
mount --rbind /dev "$jail/dev"
mount -t tmpfs -o mode=1777,size=256m tmpfs "$jail/dev/shm"
mount --rbind -o ro /sys "$jail/sys" 2>/dev/null || mount --rbind /sys "$jail/sys"

# What a pod gets: the image's ENV and nothing of this shell's.
inside() { chroot --userspec="$user" "$jail" /usr/bin/env -i -C "$workdir" "$@"; }
in_image() { inside "${image_env[@]}" "$@"; }
image_env=("$@")

echo "== framepipe --version"
got="$(in_image framepipe --version)"
echo "$got"
[ "$got" = "framepipe $version" ] || { echo "error: expected framepipe $version (pyproject.toml)" >&2; exit 1; }
echo "== framepipe models check"
in_image framepipe models check
echo "== the mask baseline is baked in and loads (the analysis stage's default model)"
in_image python -c "from framepipe.core.settings import Settings; from framepipe.stages.analysis.attributes.mask import MaskAttribute; m = MaskAttribute(Settings()); m.load(); print(m.path, m.report['held_out_accuracy'])"
echo "== the console's hls.js is in the package"
in_image python -c "from framepipe.web.server import HLS_JS; assert HLS_JS.stat().st_size > 100_000, HLS_JS; print(HLS_JS)"
echo "== no compiler on the PATH, root filesystem not writable"
in_image sh -c 'for c in cc gcc g++ c++ clang; do if command -v $c; then echo "compiler $c found" >&2; exit 1; fi; done'
if in_image sh -c 'touch /opt/framepipe/written 2>/dev/null || touch /written 2>/dev/null'; then
  echo "error: the root filesystem is writable" >&2; exit 1
fi
in_image id
echo "== framepipe sample + framepipe run --once"
in_image framepipe sample --out /tmp/sample.mp4 --seconds "$seconds"
start=$(date +%s)
if ! in_image framepipe run --source /tmp/sample.mp4 --output /tmp/output --camera smoke --once; then
  for log in "$jail$workdir"/.framepipe/logs/*.log; do echo "--- ${log#"$jail"} (last lines)"; tail -n 5 "$log"; done
  exit 1
fi
echo "run --once took $(( $(date +%s) - start )) s"
in_image python - <<'PY'
import json
from pathlib import Path

from framepipe.media.sample import count_frames

expected = count_frames("/tmp/sample.mp4")
playlist = Path("/tmp/output/smoke/index.m3u8")
assert "#EXT-X-ENDLIST" in playlist.read_text(), "the playlist is not finished"
written = count_frames(playlist)
lines = [json.loads(line) for line in Path("/tmp/output/smoke/detections.jsonl").read_text().splitlines()]
frames = [line["frame"] for line in lines]
with_face = sum(1 for line in lines if line.get("detections"))
print(f"sample frames {expected}, playlist frames {written}, detection lines {len(lines)}, "
      f"frames with a face {with_face}")
assert written == expected, f"the playlist holds {written} of {expected} frames"
assert frames == list(range(expected)), "detections.jsonl is not one line per frame, in order"
PY
echo "image smoke test passed"
OUTER
