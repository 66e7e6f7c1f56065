//! The fleet spec: JSON Lines, an optional header line
//! (`{"flr_fleet_spec":1,…}`) and then one [`Item`] per line. Item `N`
//! (0-based, counting item lines only) is what `flr fleet run SPEC --index N`
//! verifies. Blank lines and lines starting with `#` are skipped, so a
//! hand-written spec can carry comments. `docs/fleet-spec.md` documents
//! every field.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::FleetError;

/// The spec version this flr writes and reads.
pub const SPEC_VERSION: u32 = 1;

/// The optional first line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The spec version ([`SPEC_VERSION`]); a newer one is refused.
    pub flr_fleet_spec: u32,
    /// When the plan was made (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// What the plan listed (`arm subscription …`, `folder /srv/images`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How many items follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
}

/// Every file, or a seeded sample per volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Read every file.
    #[default]
    Full,
    /// Read `sample` files per volume.
    Sample,
}

/// The key chain's metadata for an item: what `--metadata`,
/// `--secret-url` and `--kek-url` give a single `flr verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct KeyChain {
    /// A file with the disk's JSON (`az snapshot show`) or Azure Backup's
    /// key-and-secret JSON. Not needed for a resource id: Resource Manager
    /// gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// The BEK secret, versioned URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_url: Option<String>,
    /// The KEK that wraps it, versioned URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_url: Option<String>,
}

impl KeyChain {
    fn is_empty(&self) -> bool {
        self == &KeyChain::default()
    }
}

/// One snapshot (or VM disk image) to verify.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Unique in the spec; names the item's result (`results/ID.json`).
    pub id: String,
    /// The image: an Azure disk or snapshot resource id, a blob URL (SAS, or
    /// none for an Entra token), a connection string, or a local path.
    pub image: String,
    /// The VM the disk belongs to (groups items in the report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// The disk's name or role (`os`, `data0`), for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// The VM's other disks, opened together with the image (LVM or md
    /// across disks): local paths, as `--with-disk` takes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with_disks: Vec<String>,
    /// When the snapshot was taken (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<String>,
    /// A baseline manifest (`flr manifest`) to compare with: a local path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The previous night's manifest (`flr manifest`, or this field's
    /// `write_manifest` from the previous run): `verify --since` re-reads
    /// only the files whose blocks changed and carries the other hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The image `since` was made of (default: the image the manifest
    /// names): the changed blocks are found against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Where to write this image's manifest (every hash, read or carried),
    /// the next night's `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_manifest: Option<String>,
    /// `full` (default) or `sample`.
    #[serde(default)]
    pub mode: Mode,
    /// Files per volume in `sample` mode (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<usize>,
    /// The sample's seed (reported either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Stop reading after this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Stop reading after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seconds: Option<f64>,
    /// Key-chain metadata (ADE).
    #[serde(default, skip_serializing_if = "KeyChain::is_empty")]
    pub key_chain: KeyChain,
    /// The incremental-snapshot family (the source disk's resource id):
    /// items of one family share five export slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The slot (0–4) the plan spread this item to; the task starts
    /// looking for a free slot there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u8>,
}

impl Item {
    /// The name of this item's result in the results location.
    pub fn result_name(&self) -> String {
        format!("results/{}.json", crate::safe_name(&self.id))
    }
}

enum Line {
    Header,
    Item(Box<Item>),
}

fn parse_line(line: &str, number: usize) -> Result<Option<Line>, FleetError> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let bad = |e: serde_json::Error| FleetError::Spec(format!("line {number}: {e}"));
    let v: serde_json::Value = serde_json::from_str(t).map_err(bad)?;
    if v.get("flr_fleet_spec").is_some() {
        let h: Header = serde_json::from_value(v).map_err(bad)?;
        if h.flr_fleet_spec > SPEC_VERSION || h.flr_fleet_spec == 0 {
            return Err(FleetError::Spec(format!(
                "line {number}: spec version {} (this flr reads version {SPEC_VERSION})",
                h.flr_fleet_spec
            )));
        }
        return Ok(Some(Line::Header));
    }
    let item: Item = serde_json::from_value(v).map_err(bad)?;
    if item.id.trim().is_empty() || item.image.trim().is_empty() {
        return Err(FleetError::Spec(format!(
            "line {number}: an item needs an id and an image"
        )));
    }
    if item
        .slot
        .is_some_and(|s| usize::from(s) >= crate::FAMILY_LIMIT)
    {
        return Err(FleetError::Spec(format!(
            "line {number}: slot {} (0 to {})",
            item.slot.unwrap_or(0),
            crate::FAMILY_LIMIT - 1
        )));
    }
    Ok(Some(Line::Item(Box::new(item))))
}

/// Calls `each(index, item)` for every item of the spec, in order, reading
/// one line at a time.
pub fn for_each(
    r: impl BufRead,
    mut each: impl FnMut(u64, Item) -> Result<(), FleetError>,
) -> Result<(), FleetError> {
    let mut index = 0u64;
    for (n, line) in r.lines().enumerate() {
        let line = line.map_err(|e| FleetError::Spec(format!("line {}: {e}", n + 1)))?;
        match parse_line(&line, n + 1)? {
            Some(Line::Header) if index > 0 => {
                return Err(FleetError::Spec(format!(
                    "line {}: a header after the first item",
                    n + 1
                )))
            }
            Some(Line::Item(item)) => {
                each(index, *item)?;
                index += 1;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every item (for tests and small specs; tasks use [`item_at`]).
pub fn read_all(r: impl BufRead) -> Result<Vec<Item>, FleetError> {
    let mut all = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for_each(r, |_, item| {
        if !ids.insert(crate::safe_name(&item.id)) {
            return Err(FleetError::Spec(format!("item id {:?} twice", item.id)));
        }
        all.push(item);
        Ok(())
    })?;
    Ok(all)
}

/// Item `index` (0-based), reading no further than it.
pub fn item_at(r: impl BufRead, index: u64) -> Result<Item, FleetError> {
    let mut seen = 0u64;
    let mut found = None;
    let mut reader = r;
    let mut line = String::new();
    let mut number = 0usize;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| FleetError::Spec(format!("line {}: {e}", number + 1)))?;
        if n == 0 {
            break;
        }
        number += 1;
        if let Some(Line::Item(item)) = parse_line(&line, number)? {
            if seen == index {
                found = Some(*item);
                break;
            }
            seen += 1;
        }
    }
    found.ok_or_else(|| {
        FleetError::Spec(format!(
            "no item {index}: the spec has {seen} item(s) (indices 0 to {})",
            seen.saturating_sub(1)
        ))
    })
}

/// Writes a spec: the header, then one line per item.
pub fn write(out: &mut dyn Write, header: &Header, items: &[Item]) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, header)?;
    writeln!(out)?;
    for i in items {
        serde_json::to_writer(&mut *out, i)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Spreads the items of each family over the slots `0..FAMILY_LIMIT` in
/// their order, so that the first five of a family start at once.
pub fn assign_slots(items: &mut [Item]) {
    let mut next: std::collections::HashMap<String, usize> = Default::default();
    for i in items.iter_mut() {
        if let Some(f) = &i.family {
            let n = next.entry(f.to_ascii_lowercase()).or_insert(0);
            i.slot = u8::try_from(*n % crate::FAMILY_LIMIT).ok();
            *n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{"flr_fleet_spec":1,"source":"hand"}
# a comment
{"id":"a","image":"/x/a.vhd","mode":"sample","sample":5}

{"id":"b","image":"/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/snapshots/b","family":"/d/1","slot":1}
"#;

    #[test]
    fn items_are_read_by_index() {
        let all = read_all(SPEC.as_bytes()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].mode, Mode::Sample);
        assert_eq!(item_at(SPEC.as_bytes(), 1).unwrap().id, "b");
        let e = item_at(SPEC.as_bytes(), 2).unwrap_err().to_string();
        assert!(e.contains("no item 2: the spec has 2 item(s)"), "{e}");
    }

    #[test]
    fn bad_specs_name_the_line() {
        for (text, want) in [
            ("{\"id\":\"a\"}", "line 1"),
            ("{\"flr_fleet_spec\":2}", "spec version 2"),
            (
                "{\"id\":\"a\",\"image\":\"x\",\"colour\":1}",
                "unknown field",
            ),
            ("{\"id\":\"a\",\"image\":\"x\",\"slot\":5}", "slot 5"),
            ("\n\nnot json", "line 3"),
        ] {
            let e = read_all(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let twice = "{\"id\":\"a\",\"image\":\"x\"}\n{\"id\":\"a\",\"image\":\"y\"}";
        assert!(read_all(twice.as_bytes()).is_err());
    }

    #[test]
    fn written_specs_read_back_and_slots_spread() {
        let mut items: Vec<Item> = (0..7)
            .map(|i| Item {
                id: format!("s{i}"),
                image: format!("/x/{i}"),
                family: (i != 3).then(|| "/D/1".to_string()),
                ..Item::default()
            })
            .collect();
        assign_slots(&mut items);
        let slots: Vec<_> = items.iter().map(|i| i.slot).collect();
        assert_eq!(
            slots,
            [Some(0), Some(1), Some(2), None, Some(3), Some(4), Some(0)]
        );
        let mut out = Vec::new();
        let h = Header {
            flr_fleet_spec: SPEC_VERSION,
            created: None,
            source: None,
            items: Some(7),
        };
        write(&mut out, &h, &items).unwrap();
        assert_eq!(read_all(out.as_slice()).unwrap(), items);
    }
}
