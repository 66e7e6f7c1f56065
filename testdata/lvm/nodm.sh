# Sourced by the LVM generators: lvm2 commands without device-mapper (this
# machine has none) or udev, their warnings about that filtered out.
CFG='devices { use_devicesfile = 0 obtain_device_list_from_udev = 0 } activation { udev_sync = 0 udev_rules = 0 } global { use_lvmpolld = 0 }'
export LVM_SUPPRESS_FD_WARNINGS=1
lvm_() { "$@" --config "$CFG" --driverloaded n 2> >(grep -v -e 'Activation disabled' -e 'not zeroed' -e 'device-mapper' -e 'libdevmapper' -e 'mapper/control' -e 'active volumes' >&2); }
