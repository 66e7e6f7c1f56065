#!/bin/bash
# Regenerates the crash-consistent XFS v4 (crc=0) fixture. This machine's own kernel is built
# without XFS v4 support, so the kernel that makes the image and replays its log is Debian's
# (CONFIG_XFS_SUPPORT_V4=y), booted under qemu with a busybox initramfs. Needs root,
# qemu-system-x86, linux-image-amd64, busybox-static, gcc with a
# static libc, xfsprogs, cpio, zstd.
#
#  dirty-v4.img.zst  v4 (crc=0), 32 MiB, one AG, made on the host by mkfs.xfs; in the VM the
#     first tree, unmount and mount, the changes of ../dirty-lib.sh (new folders and files,
#     rename, delete, grow, truncate, symlink, 300 files in a new folder, `sync`, two changes
#     without a sync), then the XFS_IOC_GOINGDOWN ioctl with the log-flush flag (what
#     `xfs_io -x -c "shutdown -f"` does), unmount.
#  dirty-v4.tsv  what the same kernel shows after mounting a SECOND copy (it replays the
#     log), hashed in the VM from that mount, never from flr.
#  dirty-v4.kernel-replay.tsv  the VM kernel's recovery counts (xfs_log_recover_*
#     tracepoints) while it mounted the copy.
#  dirty-v4.log.txt  xfs_logprint's head and tail of the image.
set -euo pipefail
cd "$(dirname "$0")"
. ../dirty-lib.sh
export QA_CHECK_FS=1 TEST_DIR=1 TEST_DEV=1

KV=$(cd /boot && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -1)
grep -q '^CONFIG_XFS_SUPPORT_V4=y' "/boot/config-$KV" || { echo "kernel $KV has no XFS v4"; exit 1; }

R=$W/root
mkdir -p "$R/bin" "$R/dev" "$R/proc" "$R/sys" "$R/tmp" "$R/payload" "$R/mods"
cp /bin/busybox "$R/bin/busybox"
: > "$R/mods/order"
for mod in virtio_pci virtio_blk xfs; do
  modprobe -S "$KV" --show-depends "$mod" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r m; do
  cp "$m" "$R/mods/"
  basename "$m" >> "$R/mods/order"
done
cat > "$W/goingdown.c" <<'C'
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
/* XFS_IOC_GOINGDOWN with XFS_FSOP_GOING_FLAGS_LOGFLUSH: force the log, then shut down. */
int main(int argc, char **argv) {
	uint32_t flags = 1;
	int fd = argc > 1 ? open(argv[1], O_RDONLY) : -1;
	if (fd < 0 || ioctl(fd, _IOR('X', 125, uint32_t), &flags) != 0) {
		perror("goingdown");
		return 1;
	}
	return 0;
}
C
gcc -static -O2 -o "$R/bin/goingdown" "$W/goingdown.c"
for d in "10000 1" "300000 2" "5000 3" "2000000 4" "70000 5" "3000 6"; do
  set -- $d
  data "$1" "$2" > "$R/payload/$1-$2"
done
cp ../dirty-lib.sh "$R/dirty-lib.sh"
cat > "$R/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# crc32c-intel needs SSE4.2, which the emulated CPU lacks; crc32c_generic serves.
for m in $(cat /mods/order); do insmod "/mods/$m" 2>/dev/null || echo "no $m"; done
run() {
  . /dirty-lib.sh
  data() { cat "/payload/$1-$2"; }
  mount /dev/vda "$M"
  first_tree rhel7-vm-01
  umount "$M"
  mount /dev/vda "$M"
  changes 'hello from a v4 log'
  goingdown "$M"
  umount "$M"
  dd if=/dev/vda of=/dev/vdb bs=1M 2>/dev/null
  T=/sys/kernel/tracing
  mount -t tracefs nodev "$T"
  EVENTS="buf_recover buf_skip buf_cancel buf_cancel_add buf_cancel_ref_inc buf_inode_buf buf_reg_buf inode_recover inode_skip inode_cancel icreate_recover icreate_cancel"
  echo 65536 > "$T/buffer_size_kb"
  for e in $EVENTS; do echo 1 > "$T/events/xfs/xfs_log_recover_$e/enable"; done
  echo 1 > "$T/tracing_on"
  mount /dev/vdb "$M"
  echo 0 > "$T/tracing_on"
  mkdir -p /out
  for e in $EVENTS; do
    printf '%s\t%s\n' "$e" "$(grep -c " xfs_log_recover_$e:" "$T/trace" || true)"
  done > /out/dirty-v4.kernel-replay.tsv
  grep 'entries-in-buffer' "$T/trace" > /out/trace-entries.txt
  manifest "$M" /out/dirty-v4.tsv
  umount "$M"
  (cd /out && tar -cf /dev/vdc .)
  echo FLR-V4-DONE
}
( set -eu; run )
sync
poweroff -f
INIT
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$W/initrd"

I=$W/dirty-v4.img
truncate -s 32M "$I" "$W/copy.img" "$W/out.img"
mkfs.xfs -q -f -m crc=0,uuid=7a516273-9eaf-40b1-8c2d-e4f506172839 -d agcount=1 -L dirtyv4 "$I" 2>&1 | grep -v deprecated || true
# Emulated (TCG), not KVM: nested KVM hangs at boot on this kind of machine, and the whole
# run takes well under a minute emulated.
timeout 600 qemu-system-x86_64 -m 512 -nographic -no-reboot \
  -kernel "/boot/vmlinuz-$KV" -initrd "$W/initrd" -append "console=ttyS0 panic=-1 quiet" \
  -drive "file=$I,format=raw,if=virtio" -drive "file=$W/copy.img,format=raw,if=virtio" \
  -drive "file=$W/out.img,format=raw,if=virtio" > "$W/console.txt" 2>&1 || true
grep -q FLR-V4-DONE "$W/console.txt" || { echo "the VM did not finish:"; tail -40 "$W/console.txt"; exit 1; }
mkdir -p "$W/out"
tar -xf "$W/out.img" -C "$W/out"
grep -q '# entries-in-buffer/entries-written: \([0-9]*\)/\1 ' "$W/out/trace-entries.txt" \
  || { echo "trace events were lost"; cat "$W/out/trace-entries.txt"; exit 1; }
cp "$W/out/dirty-v4.tsv" "$W/out/dirty-v4.kernel-replay.tsv" .
xfs_logprint -t "$I" 2>/dev/null | grep 'log tail' | sed -n 1p > dirty-v4.log.txt
grep -q DIRTY dirty-v4.log.txt || { echo "the log is not dirty"; exit 1; }
zstd -19 --long -q -f "$I" -o dirty-v4.img.zst
ls -l dirty-v4.img.zst
cat dirty-v4.log.txt dirty-v4.kernel-replay.tsv
