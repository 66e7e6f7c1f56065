//! Devices and their assembly into filesystems.

use std::collections::BTreeMap;

use flr_fs::FsError;
use flr_io::{ReadAt, Source};

use crate::bytes::uuid_str;
use crate::chunk::Chunk;
use crate::sb::{self, DevItem, Superblock};
use crate::tree::{Key, Root, Trees, CHUNK_ITEM, DEV_ITEM};
use crate::volume::Volume;
use crate::BtrfsFs;

/// One device of a Btrfs filesystem, found by its superblock on some
/// source (a partition, a logical volume, an unlocked LUKS volume, a whole
/// disk).
#[derive(Clone)]
pub struct Device {
    source: Source,
    location: String,
    pub(crate) sb: Superblock,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("location", &self.location)
            .field("fsid", &self.fsid())
            .field("devid", &self.devid())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Reads the device's superblock: every copy that fits on it (64 KiB,
    /// 64 MiB, 256 GiB) is checked and the valid one with the highest
    /// generation is used. `location` is the caller's name for the source
    /// (the engine's volume id, e.g. `p2` or `d2/p1`), used in reports.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] when no copy is a valid Btrfs superblock (the
    /// primary copy's problem is named), [`FsError::Io`] from the source.
    pub fn read(source: Source, location: &str) -> Result<Device, FsError> {
        let sb = sb::read_best(source.as_ref())?;
        Ok(Device {
            source,
            location: location.to_string(),
            sb,
        })
    }

    /// The filesystem UUID (shared by every device of the filesystem).
    pub fn fsid(&self) -> String {
        self.sb.fsid_str()
    }

    /// This device's id within the filesystem (1, 2, …).
    pub fn devid(&self) -> u64 {
        self.sb.dev_item.devid
    }

    /// This device's own UUID.
    pub fn dev_uuid(&self) -> String {
        uuid_str(&self.sb.dev_item.uuid)
    }

    /// The generation of the superblock read.
    pub fn generation(&self) -> u64 {
        self.sb.generation
    }

    /// How many devices the filesystem has, per this device's superblock.
    pub fn num_devices(&self) -> u64 {
        self.sb.num_devices
    }

    /// The filesystem label.
    pub fn label(&self) -> &str {
        &self.sb.label
    }

    /// Where the device was found (as given to [`Device::read`]).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The source the device is read from.
    pub fn source(&self) -> &Source {
        &self.source
    }
}

/// A device of an assembled filesystem that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its devid.
    pub devid: u64,
    /// Its device UUID.
    pub uuid: String,
    /// Where it was found.
    pub location: String,
    /// The generation of its superblock.
    pub generation: u64,
}

/// A device the filesystem has that was not among those given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingDevice {
    /// Its devid, where the chunk tree (or system chunk array) names it.
    pub devid: Option<u64>,
    /// Its device UUID, where the chunk tree names it.
    pub uuid: Option<String>,
}

/// The devices of one filesystem, grouped from those given to
/// [`assemble`].
#[derive(Debug, Clone)]
pub struct Assembled {
    /// The filesystem UUID.
    pub fsid: String,
    /// The label of the newest superblock.
    pub label: String,
    /// How many devices the filesystem has.
    pub num_devices: u64,
    /// The newest superblock generation among the members.
    pub generation: u64,
    /// The devices found, by devid.
    pub members: Vec<Member>,
    /// The devices not found.
    pub missing: Vec<MissingDevice>,
    /// Non-fatal findings (duplicate or stale devices, an unreadable chunk
    /// tree).
    pub warnings: Vec<String>,
    devices: Vec<Device>,
}

impl Assembled {
    /// Whether every device of the filesystem is present.
    pub fn complete(&self) -> bool {
        self.missing.is_empty() && self.members.len() as u64 == self.num_devices
    }

    /// Opens the filesystem (its default subvolume as the root). An
    /// incomplete filesystem opens degraded: what the surviving copies or
    /// parity hold reads, the rest fails naming the missing device.
    ///
    /// # Errors
    /// As [`BtrfsFs::open`]; also when the chunk or root tree cannot be
    /// read from the devices present.
    pub fn open(&self) -> Result<BtrfsFs, FsError> {
        BtrfsFs::from_devices(&self.devices)
    }

    /// The devices used (one per devid).
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }
}

/// Groups devices into filesystems by fsid; each call groups only what it
/// is given (no global registry), so images that share an fsid stay apart
/// across calls. Single-device filesystems are never merged: two copies of
/// one (a cloned disk) come back as two. Within a multi-device filesystem
/// a devid found twice keeps the copy with the higher generation and the
/// other is named in a warning.
pub fn assemble(devices: &[Device]) -> Vec<Assembled> {
    let mut groups: Vec<Vec<&Device>> = Vec::new();
    for d in devices {
        let g = (d.sb.num_devices > 1)
            .then(|| {
                groups
                    .iter_mut()
                    .find(|g| g[0].sb.num_devices > 1 && g[0].sb.fsid == d.sb.fsid)
            })
            .flatten();
        match g {
            Some(g) => g.push(d),
            None => groups.push(vec![d]),
        }
    }
    groups.into_iter().map(|g| group(&g)).collect()
}

fn group(devs: &[&Device]) -> Assembled {
    let mut warnings = Vec::new();
    let mut by_id: BTreeMap<u64, &Device> = BTreeMap::new();
    for &d in devs {
        match by_id.get(&d.devid()) {
            Some(old) if old.generation() >= d.generation() => warnings.push(format!(
                "devid {} found twice: {} (generation {}) is used, {} (generation {}) is not",
                d.devid(),
                old.location,
                old.generation(),
                d.location,
                d.generation()
            )),
            Some(old) => {
                warnings.push(format!(
                    "devid {} found twice: {} (generation {}) is used, {} (generation {}) is not",
                    d.devid(),
                    d.location,
                    d.generation(),
                    old.location,
                    old.generation()
                ));
                by_id.insert(d.devid(), d);
            }
            None => {
                by_id.insert(d.devid(), d);
            }
        }
    }
    // OK: a group is never empty.
    let newest = *by_id
        .values()
        .max_by_key(|d| d.generation())
        .expect("a group has a device");
    for d in by_id.values() {
        if d.generation() < newest.generation() {
            warnings.push(format!(
                "devid {} on {} has superblock generation {}, older than {} on {}",
                d.devid(),
                d.location,
                d.generation(),
                newest.generation(),
                newest.location
            ));
        }
    }
    let mut missing = Vec::new();
    let mut members_ok: Vec<&Device> = by_id.values().copied().collect();
    match dev_items(newest, &members_ok) {
        Ok(items) => {
            for it in &items {
                match by_id.get(&it.devid) {
                    Some(d) if d.sb.dev_item.uuid == it.uuid => {}
                    Some(d) => {
                        warnings.push(format!(
                            "{} claims devid {} but its device UUID {} is not the chunk tree's {}",
                            d.location,
                            it.devid,
                            d.dev_uuid(),
                            uuid_str(&it.uuid)
                        ));
                        members_ok.retain(|m| m.devid() != it.devid);
                        missing.push(MissingDevice {
                            devid: Some(it.devid),
                            uuid: Some(uuid_str(&it.uuid)),
                        });
                    }
                    None => missing.push(MissingDevice {
                        devid: Some(it.devid),
                        uuid: Some(uuid_str(&it.uuid)),
                    }),
                }
            }
        }
        Err(e) => {
            warnings.push(format!("the chunk tree cannot be read: {e}"));
            let mut named = std::collections::BTreeSet::new();
            if let Ok(v) = Volume::bootstrap(&newest.sb, BTreeMap::new()) {
                for c in v.chunks.values() {
                    named.extend(c.stripes.iter().map(|s| s.devid));
                }
            }
            for id in named.into_iter().filter(|id| !by_id.contains_key(id)) {
                missing.push(MissingDevice {
                    devid: Some(id),
                    uuid: None,
                });
            }
        }
    }
    let known = members_ok.len() as u64 + missing.len() as u64;
    for _ in known..newest.sb.num_devices {
        missing.push(MissingDevice {
            devid: None,
            uuid: None,
        });
    }
    Assembled {
        fsid: newest.fsid(),
        label: newest.sb.label.clone(),
        num_devices: newest.sb.num_devices,
        generation: newest.generation(),
        members: members_ok
            .iter()
            .map(|d| Member {
                devid: d.devid(),
                uuid: d.dev_uuid(),
                location: d.location.clone(),
                generation: d.generation(),
            })
            .collect(),
        missing,
        warnings,
        devices: std::iter::once(newest.clone())
            .chain(
                members_ok
                    .iter()
                    .filter(|d| d.devid() != newest.devid())
                    .map(|&d| d.clone()),
            )
            .collect(),
    }
}

/// Builds the volume of `devs` (the first gives the superblock) and reads
/// its chunk tree; returns the volume and the devices the chunk tree lists.
pub(crate) fn load_chunks(
    sb: &Superblock,
    devs: &[&Device],
) -> Result<(Trees, Vec<DevItem>), FsError> {
    let map: BTreeMap<u64, Source> = devs.iter().map(|d| (d.devid(), d.source.clone())).collect();
    let vol = Volume::bootstrap(sb, map)?;
    let mut trees = Trees::new(vol, sb.csum_type, sb.meta_fsid, sb.nodesize);
    let root = Root {
        bytenr: sb.chunk_root,
        level: sb.chunk_root_level,
        generation: Some(sb.chunk_root_generation),
    };
    let mut chunks = Vec::new();
    let mut items = Vec::new();
    for it in trees.range(
        root,
        Key::new(0, 0, 0),
        Key::new(u64::MAX, u8::MAX, u64::MAX),
    )? {
        let it = it?;
        match it.key.ty {
            CHUNK_ITEM => {
                let (c, _) = Chunk::parse(it.key.offset, it.data()).map_err(|e| {
                    crate::volume::logical_err(it.leaf(), format!("chunk tree: {e}"))
                })?;
                chunks.push(c);
            }
            DEV_ITEM => {
                if let Some(d) = DevItem::parse(it.data()) {
                    items.push(d);
                }
            }
            _ => {}
        }
    }
    for c in chunks {
        trees
            .vol
            .insert(c)
            .map_err(|e| crate::volume::logical_err(sb.chunk_root, format!("chunk tree: {e}")))?;
    }
    Ok((trees, items))
}

fn dev_items(newest: &Device, devs: &[&Device]) -> Result<Vec<DevItem>, FsError> {
    load_chunks(&newest.sb, devs).map(|(_, items)| items)
}

/// Whether `src` holds a Btrfs device: `head` is the start of the volume
/// as the engine read it (about 68 KiB); the superblock at 64 KiB is
/// checked there when it is whole, else read from `src`.
pub fn probe(head: &[u8], src: &dyn ReadAt) -> bool {
    if let Some(r) = sb::probe_head(head) {
        return r;
    }
    let mut b = vec![0u8; sb::SB_SIZE];
    src.read_exact_at(sb::PRIMARY, &mut b).is_ok() && Superblock::parse(&b, sb::PRIMARY).is_ok()
}
