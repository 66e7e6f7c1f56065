# Shared by testdata/xfs/gen-dirty.sh and testdata/ext4/gen-dirty.sh (sourced, not run): a
# scratch folder with a mount point, the manifest of a mounted tree, test data, and the tree
# and the changes both crash-consistent images are made of.
#
# After sourcing: $W (scratch folder, removed on exit) and $M (mount point, unmounted on exit).
W=$(mktemp -d)
M=$W/mnt
cleanup() { mountpoint -q "$M" 2>/dev/null && umount "$M"; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$M"

# manifest DIR OUT: `kind path size sha256` of every path below DIR (f file, d folder, l link:
# the target's length and sha256), sorted.
manifest() {
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while read -r f; do
    p=${f#./}
    if [ -L "$f" ]; then t=$(readlink "$f"); printf 'l\t%s\t%s\t%s\n' "$p" "${#t}" "$(printf %s "$t" | sha256sum | cut -d' ' -f1)"
    elif [ -d "$f" ]; then printf 'd\t%s\t0\t\n' "$p"
    else printf 'f\t%s\t%s\t%s\n' "$p" "$(stat -c %s "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"; fi
  done) > "$2"
}

# data N SEED: N bytes of a pattern that differs per SEED.
data() {
  python3 -c 'import sys; n,s=int(sys.argv[1]),int(sys.argv[2]); sys.stdout.buffer.write(bytes((i*131+s*7+(i>>9))%256 for i in range(n)))' "$1" "$2"
}

# first_tree HOSTNAME: the tree on disk before the crash (the caller unmounts and mounts
# again after it).
first_tree() {
  mkdir -p "$M/etc" "$M/home/azure" "$M/var/log"
  printf '%s\n' "$1" > "$M/etc/hostname"
  data 10000 1 > "$M/home/azure/grow.bin"
  data 300000 2 > "$M/home/azure/shrink.bin"
  printf 'to be renamed\n' > "$M/home/azure/old-name.txt"
  printf 'to be deleted\n' > "$M/home/azure/doomed.txt"
  data 5000 3 > "$M/var/log/messages"
}

# changes NOTE: new folders and files (one of 2 MB), a rename, a delete, a file grown and one
# truncated, a symlink, 300 files in a new folder, `sync`, then two changes without a sync.
changes() {
  mkdir -p "$M/new/deeper"
  data 2000000 4 > "$M/new/two-megabytes.bin"
  printf '%s\n' "$1" > "$M/new/deeper/note.txt"
  mv "$M/home/azure/old-name.txt" "$M/home/azure/new-name.txt"
  rm "$M/home/azure/doomed.txt"
  data 70000 5 >> "$M/home/azure/grow.bin"
  truncate -s 4097 "$M/home/azure/shrink.bin"
  ln -s ../etc/hostname "$M/new/hostlink"
  mkdir "$M/many"
  for i in $(seq 1 300); do printf 'file %d\n' "$i" > "$M/many/f$(printf %04d "$i")"; done
  data 3000 6 >> "$M/var/log/messages"
  sync
  printf 'never synced\n' > "$M/new/unsynced.txt"
  mkdir "$M/new/empty-after-sync"
}
