//! Test support shared by the VHD and VHDX readers' tests: differencing
//! chains that never end, and the corpus table of virtual-disk hashes.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flr_io::{check_range, IoError, ParentResolver, ReadAt, Source};

/// Bytes shared by every copy of the endless chain.
struct Shared(Arc<Vec<u8>>);

impl ReadAt for Shared {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range("shared", offset, buf.len(), self.len())?;
        let o = offset as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

/// A resolver that hands out a new copy of the same differencing disk under
/// a new name every time: an endless chain without a cycle, which a reader
/// must stop at its depth cap.
#[derive(Clone)]
pub struct EndlessParents {
    image: Arc<Vec<u8>>,
    opened: Arc<AtomicUsize>,
}

impl EndlessParents {
    /// A chain of copies of `image` (a differencing disk).
    pub fn new(image: Vec<u8>) -> EndlessParents {
        EndlessParents {
            image: Arc::new(image),
            opened: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many parents were handed out.
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }
}

impl ParentResolver for EndlessParents {
    fn open_parent(&self, _candidates: &[String]) -> Result<(Source, String), IoError> {
        let n = self.opened.fetch_add(1, Ordering::Relaxed);
        Ok((Arc::new(Shared(self.image.clone())), format!("copy{n}")))
    }
    fn for_parent(&self, _parent_path: &str) -> Box<dyn ParentResolver> {
        Box::new(self.clone())
    }
}

/// What a reader says of a corpus image: its virtual size, its disk type
/// (as `Debug` prints it) and its virtual disk.
pub type Opened = (u64, String, Source);

/// Checks every image of format `qemu_format` (`vpc`, `vhdx`) in the
/// corpus table `expected/vhd-vhdx.virtual-disk-sha256.tsv` against what
/// `open` makes of it: the size, the disk type, and the virtual disk's
/// sha256 against qemu-img's and libvhdi's. Returns how many were checked;
/// `None` (said loudly) without the corpus.
pub fn check_corpus_virtual_disks(
    test: &str,
    qemu_format: &str,
    open: impl Fn(&Path) -> Result<Opened, String>,
) -> Option<usize> {
    let (unpacked, corpus) = crate::corpus(test)?;
    let tsv = std::fs::read_to_string(corpus.join("expected/vhd-vhdx.virtual-disk-sha256.tsv"))
        .expect("read vhd-vhdx tsv");
    let mut seen = 0;
    for line in tsv.lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        if c.len() < 6 || c[1] != qemu_format {
            continue;
        }
        let rel = c[0].replace("/unpacked/", "/");
        let (len, disk_type, disk) =
            open(&unpacked.join(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(len, c[3].parse::<u64>().unwrap(), "{rel}");
        assert_eq!(disk_type, c[2], "{rel}: disk type");
        let h = crate::sha256_reader(flr_io::ReaderCursor::new(disk));
        assert_eq!(h, c[4], "{rel}: qemu-img");
        assert_eq!(h, c[5], "{rel}: libvhdi");
        seen += 1;
    }
    Some(seen)
}

/// Decompresses container fixture `name` (testdata/container) and,
/// recursively, its parents, so that each parent sits beside its child
/// under the name its locator gives; returns the child's path.
pub fn container_fixture(name: &str) -> std::path::PathBuf {
    let exp = crate::container_expected();
    let mut n = Some(name.to_string());
    let mut first = None;
    while let Some(cur) = n {
        let p = crate::fixture(&format!("container/{cur}.zst"));
        first.get_or_insert(p);
        n = exp.get(&cur).and_then(|e| e.parent.clone());
    }
    first.expect("fixture path")
}

/// The whole of `d`, read `chunk` bytes at a time (odd sizes cross block
/// and sector boundaries).
pub fn read_all(d: &dyn ReadAt, chunk: usize) -> Vec<u8> {
    let mut out = vec![0u8; d.len() as usize];
    let mut off = 0usize;
    while off < out.len() {
        let n = chunk.min(out.len() - off);
        d.read_exact_at(off as u64, &mut out[off..off + n])
            .expect("read virtual disk");
        off += n;
    }
    out
}

/// Checks each of the container fixtures `names` (testdata/container) as
/// `open` reads it (its virtual disk and warnings): the size and sha256
/// testdata/container/expected.tsv gives (from qemu-img and libvhdi), no
/// warnings, and reads of `odd` bytes at a time giving the same bytes as
/// one read.
pub fn check_container_fixtures(
    names: &[&str],
    odd: usize,
    open: impl Fn(&Path) -> Result<(Source, Vec<String>), String>,
) {
    let exp = crate::container_expected();
    for name in names {
        let e = &exp[*name];
        let (disk, warnings) =
            open(&container_fixture(name)).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(disk.len(), e.size, "{name}");
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        let all = read_all(disk.as_ref(), usize::MAX);
        assert_eq!(crate::sha256_hex(&all), e.sha256, "{name} (one read)");
        let pieces = read_all(disk.as_ref(), odd);
        assert!(
            pieces == all,
            "{name}: reads of {odd} bytes differ from one big read"
        );
    }
}
