//! The facts `probe` reports about each layer, filled in by the format
//! descriptors.

use serde::Serialize;
use serde_json::{Map, Value};

/// What a container layer is.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    /// `raw`, `vhd`, `vhdx`.
    pub format: &'static str,
    /// `fixed`, `dynamic`, `differencing` (VHD/VHDX), none for raw.
    pub subtype: Option<String>,
    /// Size of the virtual disk in bytes.
    pub virtual_size: u64,
    /// Size of the image file (the bytes below the container) in bytes.
    pub file_size: u64,
    /// Logical sector size the container declares (VHDX), if any.
    pub logical_sector_size: Option<u32>,
    /// Parent images of a differencing disk, nearest first.
    pub parents: Vec<String>,
    /// Non-fatal findings (bad footer checksum, unreplayed log…).
    pub warnings: Vec<String>,
}

impl ContainerInfo {
    /// A raw image: the bytes are the disk.
    pub fn raw(len: u64) -> ContainerInfo {
        ContainerInfo {
            format: "raw",
            subtype: None,
            virtual_size: len,
            file_size: len,
            logical_sector_size: None,
            parents: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// A partition table.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    /// `gpt` or `mbr`.
    pub scheme: &'static str,
    /// Logical sector size used.
    pub sector_size: u32,
    /// Disk GUID (GPT) or signature (MBR).
    pub disk_id: Option<String>,
    /// Non-fatal findings (backup GPT header used…).
    pub warnings: Vec<String>,
}

/// Partition facts of a volume.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    /// Partition number.
    pub number: u32,
    /// Type: GPT type GUID or MBR type byte as `0x83`.
    pub type_id: String,
    /// Name of the type, where known.
    pub type_name: Option<String>,
    /// GPT partition name.
    pub name: Option<String>,
    /// GPT partition GUID.
    pub guid: Option<String>,
    /// MBR: a logical partition inside an extended one.
    pub logical: bool,
    /// MBR: the boot flag.
    pub bootable: bool,
}

/// What a LUKS header says without a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LuksSummary {
    /// 1 or 2.
    pub version: u16,
    /// Volume UUID.
    pub uuid: String,
    /// Cipher and mode, e.g. `aes-xts-plain64` (LUKS1 header; LUKS2 first segment).
    pub cipher: Option<String>,
    /// LUKS2 label.
    pub label: Option<String>,
}

/// The encryption layer of a volume, as `probe` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EncryptionInfo {
    /// `luks1`, `luks2`, `bitlocker`, `bitlocker-to-go`.
    pub scheme: String,
    /// Cipher, e.g. `AES-XTS-128`.
    pub cipher: String,
    /// Protectors (BitLocker) or keyslots and tokens (LUKS) with their ids.
    pub protectors: Vec<String>,
    /// How the volume was unlocked (`recovery password`, `clear key`…), or
    /// None while locked.
    pub unlocked_with: Option<String>,
    /// Where the LUKS header was read: `on the volume`, a file given with
    /// `--luks-header`, or a file found on another volume (ADE layout).
    pub header: Option<String>,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
}

/// What `probe` reports about an assembled group (an LVM2 volume group, an
/// md array): the format fills in its own facts; the scanner adds the
/// state each volume of the group ended in.
#[derive(Debug, Clone)]
pub struct GroupReport {
    /// The list of `probe --json` this report goes into (`volume_groups`).
    pub section: &'static str,
    /// The heading line for people.
    pub heading: String,
    /// The format's own JSON fields (`name`, `id`, `seqno`…), in order.
    pub fields: Vec<(&'static str, Value)>,
    /// JSON key and human label of the members (`pvs`, `PV`).
    pub members_key: (&'static str, &'static str),
    /// Each member: (its id, where it was found or why it is missing).
    pub members: Vec<(String, String)>,
    /// JSON key and human label of the group's volumes (`lvs`, `LV`).
    pub children_key: (&'static str, &'static str),
    /// Each volume of the group: (volume id, layout).
    pub children: Vec<(String, String)>,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
}

impl GroupReport {
    /// The JSON object: the format's fields, the members as
    /// `[id, where]` pairs, the volumes as `[id, layout, state]` triples
    /// (`state(id)` gives the verdict each ended in), and the warnings.
    pub fn json(&self, state: impl Fn(&str) -> String) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.fields {
            m.insert((*k).to_string(), v.clone());
        }
        m.insert(
            self.members_key.0.to_string(),
            Value::from(
                self.members
                    .iter()
                    .map(|(a, b)| Value::from(vec![a.clone(), b.clone()]))
                    .collect::<Vec<_>>(),
            ),
        );
        m.insert(
            self.children_key.0.to_string(),
            Value::from(
                self.children
                    .iter()
                    .map(|(id, layout)| Value::from(vec![id.clone(), layout.clone(), state(id)]))
                    .collect::<Vec<_>>(),
            ),
        );
        m.insert("warnings".into(), Value::from(self.warnings.clone()));
        Value::Object(m)
    }

    /// The lines for people: the heading (to be indented by two spaces),
    /// then one line per member, per volume and per warning, indented by
    /// eight.
    pub fn lines(&self, state: impl Fn(&str) -> String) -> Vec<String> {
        let mut out = vec![format!("  {}", self.heading)];
        for (id, at) in &self.members {
            out.push(format!("        {} {id}: {at}", self.members_key.1));
        }
        for (id, layout) in &self.children {
            out.push(format!(
                "        {} {id}: {layout}, {}",
                self.children_key.1,
                state(id)
            ));
        }
        for w in &self.warnings {
            out.push(format!("        warning: {w}"));
        }
        out
    }
}
