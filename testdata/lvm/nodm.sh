# Sourced by the LVM generators: lvm2 commands without device-mapper (this
# machine has none) or udev, their warnings about that filtered out.
CFG='devices { use_devicesfile = 0 obtain_device_list_from_udev = 0 } activation { udev_sync = 0 udev_rules = 0 } global { use_lvmpolld = 0 }'
export LVM_SUPPRESS_FD_WARNINGS=1
lvm_() { "$@" --config "$CFG" --driverloaded n 2> >(grep -v -e 'Activation disabled' -e 'not zeroed' -e 'device-mapper' -e 'libdevmapper' -e 'mapper/control' -e 'active volumes' >&2); }

# pool_parts DEV VG PV_UUID DATA_SIZE OUT: on loop device DEV, a PV (uuid
# PV_UUID) and VG (1 MiB extents) holding linear LVs m (4 MiB, the thin
# pool's metadata to be) and d (DATA_SIZE, its data), backed up as text to
# OUT (for thin.py's pool_vg_text).
pool_parts() {
  lvm_ pvcreate -q -u "$3" --norestorefile "$1"
  lvm_ vgcreate -q -s 1M "$2" "$1"
  lvm_ lvcreate -q --activate n --zero n -n m -L 4M "$2"
  lvm_ lvcreate -q --activate n --zero n -n d -L "$4" "$2"
  lvm_ vgcfgbackup -q -f "$5" "$2"
}
