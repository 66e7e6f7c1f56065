//! The boot sector: BIOS parameter block and the volume geometry derived
//! from it.

use flr_fs::FsError;

/// FAT12, FAT16 or FAT32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    /// 12-bit FAT entries.
    Fat12,
    /// 16-bit FAT entries.
    Fat16,
    /// 32-bit (28 used) FAT entries.
    Fat32,
}

impl FatType {
    /// `fat12`, `fat16`, `fat32`.
    pub fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "fat12",
            FatType::Fat16 => "fat16",
            FatType::Fat32 => "fat32",
        }
    }

    /// The largest cluster number a chain may hold (the values above it
    /// are reserved, bad or end-of-chain markers).
    pub(crate) fn max_cluster(self) -> u32 {
        match self {
            FatType::Fat12 => 0xFF6,
            FatType::Fat16 => 0xFFF6,
            FatType::Fat32 => 0x0FFF_FFF6,
        }
    }

    /// FAT bytes needed for `entries` entries.
    fn fat_bytes(self, entries: u64) -> u64 {
        match self {
            FatType::Fat12 => (entries * 3).div_ceil(2),
            FatType::Fat16 => entries * 2,
            FatType::Fat32 => entries * 4,
        }
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .unwrap_or(0)
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

/// Everything flr needs from the boot sector, in bytes where possible.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub(crate) fat_type: FatType,
    pub(crate) bytes_per_sector: u32,
    pub(crate) cluster_size: u32,
    /// Byte offset of the FAT in use.
    pub(crate) fat_offset: u64,
    /// Size in bytes of one FAT.
    pub(crate) fat_bytes: u64,
    /// FAT12/16: byte offset and size of the fixed root directory.
    pub(crate) root_offset: u64,
    pub(crate) root_bytes: u64,
    /// FAT32: first cluster of the root directory.
    pub(crate) root_cluster: u32,
    /// Byte offset of cluster 2.
    pub(crate) data_offset: u64,
    /// Number of data clusters (valid cluster numbers are 2..cluster_count+2).
    pub(crate) cluster_count: u32,
    /// Volume size in bytes per the BPB.
    pub(crate) volume_bytes: u64,
    /// Volume serial number, when the extended boot signature is there.
    pub(crate) serial: Option<u32>,
    /// Boot-sector label (raw 11 bytes), when the extended boot signature
    /// is 0x29.
    pub(crate) label: Option<[u8; 11]>,
    /// FAT32: byte offset of the FSInfo sector.
    pub(crate) fsinfo_offset: Option<u64>,
}

fn corrupt(what: impl Into<String>) -> FsError {
    FsError::Corrupt {
        fs: "fat",
        offset: Some(0),
        what: format!("boot sector: {}", what.into()),
    }
}

impl Geometry {
    /// Parses the first 512 bytes of a volume.
    pub(crate) fn parse(s: &[u8]) -> Result<Geometry, FsError> {
        if s.len() < 512 {
            return Err(corrupt("shorter than 512 bytes"));
        }
        let oem = &s[3..11];
        if oem == b"NTFS    " || oem == b"EXFAT   " {
            return Err(corrupt("this is an NTFS or exFAT boot sector"));
        }
        let bps = u32::from(le16(s, 11));
        if !matches!(bps, 512 | 1024 | 2048 | 4096) {
            return Err(corrupt(format!(
                "bytes per sector {bps} is not 512, 1024, 2048 or 4096"
            )));
        }
        let spc = u32::from(s[13]);
        if !spc.is_power_of_two() {
            return Err(corrupt(format!(
                "sectors per cluster {spc} is not a power of two"
            )));
        }
        let reserved = u64::from(le16(s, 14));
        if reserved == 0 {
            return Err(corrupt("no reserved sectors"));
        }
        let fats = u64::from(s[16]);
        if fats == 0 || fats > 4 {
            return Err(corrupt(format!("number of FATs {fats} is not in 1..=4")));
        }
        let root_entries = u64::from(le16(s, 17));
        let total16 = u64::from(le16(s, 19));
        let media = s[21];
        if media != 0xF0 && media < 0xF8 {
            return Err(corrupt(format!("media byte {media:#04x} is not valid")));
        }
        let fat16_sectors = u64::from(le16(s, 22));
        let total32 = u64::from(le32(s, 32));
        let total = if total16 != 0 { total16 } else { total32 };
        if total == 0 {
            return Err(corrupt("total sector count is zero"));
        }
        let fat32_sectors = u64::from(le32(s, 36));
        // FAT32 is said by the BPB itself: no 16-bit FAT size.
        let is_fat32 = fat16_sectors == 0;
        let fat_sectors = if is_fat32 {
            fat32_sectors
        } else {
            fat16_sectors
        };
        if fat_sectors == 0 {
            return Err(corrupt("FAT size is zero"));
        }
        if is_fat32 && root_entries != 0 {
            return Err(corrupt("FAT32 BPB with a fixed root directory"));
        }
        if !is_fat32 && root_entries == 0 {
            return Err(corrupt("FAT12/16 BPB without root directory entries"));
        }
        let bps64 = u64::from(bps);
        let root_sectors = (root_entries * 32).div_ceil(bps64);
        // All terms are at most 2^32 * 4: no overflow in u64.
        let fat_start = reserved;
        let root_start = fat_start + fats * fat_sectors;
        let data_start = root_start + root_sectors;
        if data_start >= total {
            return Err(corrupt(format!(
                "data area starts at sector {data_start}, at or past the volume end ({total} sectors)"
            )));
        }
        let clusters = (total - data_start) / u64::from(spc);
        if clusters == 0 {
            return Err(corrupt("no data clusters"));
        }
        let fat_bytes = fat_sectors * bps64;

        let ext_at = if is_fat32 { 64 } else { 36 };
        let ext_sig = s[ext_at + 2];
        let serial = matches!(ext_sig, 0x28 | 0x29).then(|| le32(s, ext_at + 3));
        let label = (ext_sig == 0x29).then(|| {
            let mut l = [0u8; 11];
            l.copy_from_slice(&s[ext_at + 7..ext_at + 18]);
            l
        });
        let type_string = if ext_sig == 0x29 {
            &s[ext_at + 18..ext_at + 26]
        } else {
            &[][..]
        };

        let fat_type = if is_fat32 {
            FatType::Fat32
        } else {
            // FAT12 and FAT16 BPBs differ only in the type string. The
            // cluster count decides, except that a volume made as FAT16
            // with few clusters (mkfs.fat -F 16 allows it) says "FAT16" and
            // has a FAT sized for 16-bit entries: then the string wins.
            let fat16_fits = FatType::Fat16
                .fat_bytes(clusters.min(u64::from(FatType::Fat16.max_cluster()) - 1) + 2)
                <= fat_bytes;
            if clusters >= 4085 || (type_string == b"FAT16   " && fat16_fits) {
                FatType::Fat16
            } else {
                FatType::Fat12
            }
        };
        // Clusters beyond what the FAT can describe or the type can
        // number are unusable.
        let fat_entries = match fat_type {
            FatType::Fat12 => fat_bytes * 2 / 3,
            FatType::Fat16 => fat_bytes / 2,
            FatType::Fat32 => fat_bytes / 4,
        };
        let cluster_count = clusters
            .min(fat_entries.saturating_sub(2))
            .min(u64::from(fat_type.max_cluster()) - 1);
        if cluster_count == 0 {
            return Err(corrupt("the FAT is too small for any cluster"));
        }
        let cluster_count =
            u32::try_from(cluster_count).map_err(|_| corrupt("too many clusters"))?;

        let (root_cluster, fsinfo_offset, active_fat) = if is_fat32 {
            let flags = le16(s, 40);
            let active = if flags & 0x80 != 0 {
                u64::from(flags & 0x0F)
            } else {
                0
            };
            if active >= fats {
                return Err(corrupt(format!("active FAT {active} does not exist")));
            }
            let rc = le32(s, 44) & 0x0FFF_FFFF;
            if rc < 2 || u64::from(rc) >= u64::from(cluster_count) + 2 {
                return Err(corrupt(format!(
                    "root directory cluster {rc} is not a data cluster"
                )));
            }
            let fsi = u64::from(le16(s, 48));
            let fsinfo = (fsi != 0 && fsi != 0xFFFF && fsi < reserved).then_some(fsi * bps64);
            (rc, fsinfo, active)
        } else {
            (0, None, 0)
        };
        Ok(Geometry {
            fat_type,
            bytes_per_sector: bps,
            cluster_size: bps * spc,
            fat_offset: (fat_start + active_fat * fat_sectors) * bps64,
            fat_bytes,
            root_offset: root_start * bps64,
            root_bytes: root_entries * 32,
            root_cluster,
            data_offset: data_start * bps64,
            cluster_count,
            volume_bytes: total * bps64,
            serial,
            label,
            fsinfo_offset,
        })
    }

    /// Byte offset of a data cluster (2..cluster_count+2).
    pub(crate) fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster.saturating_sub(2)) * u64::from(self.cluster_size)
    }

    /// Whether `c` is a data cluster number.
    pub(crate) fn is_data_cluster(&self, c: u32) -> bool {
        c >= 2 && u64::from(c) < u64::from(self.cluster_count) + 2
    }
}
