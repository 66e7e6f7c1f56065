//! The recursive scan: nodes probed against [`crate::FORMATS`] until each
//! ends, groups assembled once their members are found, detached headers
//! paired with the ciphertext they belong to.
//!
//! A node is a byte source with an id. Processing a node probes its bytes;
//! a layer that presents other bytes in place (a container's virtual disk,
//! an unlocked volume) replaces the node's bytes, which are probed again;
//! a layer with children (a partition table) creates child nodes; a member
//! of a group waits for assembly. When no node is left, the scan asks the
//! header providers ([`crate::ade`]) for detached LUKS headers of the nodes
//! that look like ciphertext, then assembles the groups whose members are
//! all present, and only when nothing else is left the incomplete ones, one
//! at a time (a missing member may still lie inside another group's
//! volume). Each group is assembled once.

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use flr_io::{ParentResolver, Source};
use flr_layer::{
    read_head, Child, ContainerInfo, Format, Kind, LayerError, LayerKind, Locked, Member,
    MemberRef, OpenContext, Opened, PartitionInfo, TableInfo,
};

use crate::ade::{self, FoundHeader, HeaderProvider};
use crate::{ContentInfo, EngineError, Group, Image, KeyRing, Scan, Verdict, Volume, FORMATS};

/// The most layers stacked on one chain (containers, tables, encryption,
/// volume managers, counted from the image): deeper is a crafted image.
pub(crate) const MAX_DEPTH: usize = 24;

/// The sources of detached headers, asked for the nodes that look like
/// ciphertext but carry no header.
static HEADER_PROVIDERS: &[&dyn HeaderProvider] = &[&ade::AdeOsDisk];

/// An image to scan: one of a VM's disks, or a disk image in a file.
pub(crate) struct RootSpec<'a> {
    pub(crate) source: Source,
    pub(crate) location: String,
    /// Prepended to the ids of the volumes found on it (`d2/`,
    /// `p2:/x.vhdx::`).
    pub(crate) prefix: String,
    pub(crate) parents: &'a dyn ParentResolver,
}

struct Root<'a> {
    spec: RootSpec<'a>,
    container: Option<ContainerInfo>,
    table: Option<TableInfo>,
    disk: Source,
}

struct Node {
    id: String,
    /// What a child's suffix is appended to (empty for the disk's own
    /// table, `d2/`, `p3/`).
    child_prefix: String,
    root: usize,
    parent: Option<usize>,
    /// Layers below this node's bytes, counted from the image.
    depth: usize,
    offset: u64,
    size: u64,
    partition: Option<PartitionInfo>,
    source: Source,
    content: ContentInfo,
    filesystem: Option<&'static dyn Format>,
    is_volume: bool,
    sector_size: Option<u32>,
    /// (format, bytes) fingerprints of the layers opened on this node, for
    /// cycle detection in its descendants.
    seen: Vec<(usize, u64)>,
    /// What it is, written before its detail (an LV's layout and name),
    /// and the separator (`: ` before a refusal's reason, else `; `).
    label: Option<(String, &'static str)>,
    damage: Option<String>,
    /// Whether an encryption layer was opened on it.
    unlocked: bool,
    /// Its bytes cannot be read at all (a refused LV or array).
    refused: bool,
    /// Opens the filesystem it shows when that needs more than its own
    /// bytes (a multi-device Btrfs).
    opener: Option<flr_layer::FsOpener>,
}

struct PendingMember {
    node: usize,
    member: Member,
    noted: bool,
}

/// What probing a node found.
enum Probed {
    /// Format `fi` claims it; this is what opening it gave.
    Opened(usize, Result<Opened, LayerError>),
    /// A filesystem a quick scan recognised without opening it.
    Recognised,
    /// No format claims it.
    Nothing,
}

struct Scanner<'a> {
    keys: &'a KeyRing,
    scan: Scan,
    roots: Vec<Root<'a>>,
    nodes: Vec<Node>,
    work: VecDeque<usize>,
    members: Vec<Vec<PendingMember>>,
    emitted: HashSet<(usize, String)>,
    /// (root, group, the node ids of its volumes).
    groups: Vec<(usize, flr_layer::GroupReport, Vec<usize>)>,
    /// Nodes that look like ciphertext and have no header.
    cipher: Vec<usize>,
    /// (candidates, filesystems) when headers were last looked for.
    headers_looked: (usize, usize),
    headers_seen: HashSet<(String, &'static str)>,
}

/// Scans the roots together and returns one image per root.
pub(crate) fn scan(
    roots: Vec<RootSpec<'_>>,
    scan: Scan,
    keys: &KeyRing,
) -> Result<Vec<Image>, EngineError> {
    let mut s = Scanner {
        keys,
        scan,
        roots: Vec::new(),
        nodes: Vec::new(),
        work: VecDeque::new(),
        members: (0..FORMATS.len()).map(|_| Vec::new()).collect(),
        emitted: HashSet::new(),
        groups: Vec::new(),
        cipher: Vec::new(),
        headers_looked: (0, 0),
        headers_seen: HashSet::new(),
    };
    for (r, spec) in roots.into_iter().enumerate() {
        let source = spec.source.clone();
        let id = format!("{}disk", spec.prefix);
        let child_prefix = spec.prefix.clone();
        s.roots.push(Root {
            spec,
            container: None,
            table: None,
            disk: source.clone(),
        });
        let size = source.len();
        s.nodes.push(Node {
            id,
            child_prefix,
            root: r,
            parent: None,
            depth: 0,
            offset: 0,
            size,
            partition: None,
            source,
            content: ContentInfo::new(Kind::UNKNOWN, Verdict::Unknown, ""),
            filesystem: None,
            is_volume: true,
            sector_size: None,
            seen: Vec::new(),
            label: None,
            damage: None,
            unlocked: false,
            refused: false,
            opener: None,
        });
        s.work.push_back(s.nodes.len() - 1);
    }
    s.run()?;
    Ok(s.finish())
}

impl Scanner<'_> {
    fn run(&mut self) -> Result<(), EngineError> {
        loop {
            while let Some(n) = self.work.pop_front() {
                self.process(n)?;
            }
            if self.find_headers() || self.assemble(false) || self.assemble(true) {
                continue;
            }
            return Ok(());
        }
    }

    /// Probes node `n` and follows its in-place layers until it ends.
    fn process(&mut self, n: usize) -> Result<(), EngineError> {
        if !self.nodes[n].unlocked && self.nodes[n].seen.is_empty() {
            if let Some(h) = self.keys.luks_header(&self.nodes[n].id).cloned() {
                // A detached header named for this node: its bytes are
                // LUKS ciphertext whatever they look like.
                return self.with_header(n, h.source, h.origin, true);
            }
        }
        loop {
            let node = &self.nodes[n];
            if node.depth + node.seen.len() >= MAX_DEPTH {
                let kind = node.content.kind;
                self.fail(
                    n,
                    kind,
                    format!("more than {MAX_DEPTH} layers stacked: not scanned further (a crafted image?)"),
                );
                return Ok(());
            }
            let src = node.source.clone();
            let head = match read_head(src.as_ref()) {
                Ok(h) => h,
                Err(e) => {
                    let what = if node.unlocked {
                        "unlocked, but the decrypted volume cannot be read"
                    } else {
                        "cannot read the volume"
                    };
                    let kind = node.content.kind;
                    self.fail(n, kind, format!("{what}: {e}"));
                    return Ok(());
                }
            };
            let (fi, opened) = match self.probe(n, &head, &src) {
                Probed::Opened(fi, o) => (fi, o),
                Probed::Recognised => return Ok(()),
                Probed::Nothing => {
                    self.nothing(n, &head);
                    return Ok(());
                }
            };
            let format = FORMATS[fi];
            let kind = format.kind();
            let print = fingerprint(fi, &head, src.len());
            if let Some(a) = self.cycle(n, print) {
                self.fail(
                    n,
                    kind,
                    format!(
                        "the same {} as on {a}, which contains this volume: a cycle, not scanned further",
                        kind.display
                    ),
                );
                return Ok(());
            }
            self.nodes[n].seen.push(print);
            let opened = match opened {
                Ok(o) => o,
                Err(e) => {
                    let node = &self.nodes[n];
                    // The image's own container or table: nothing is usable.
                    if node.parent.is_none()
                        && !node.unlocked
                        && matches!(kind.layer, LayerKind::Container | LayerKind::PartitionTable)
                    {
                        return Err(EngineError::Layer {
                            format: kind.name,
                            error: e,
                        });
                    }
                    let detail = if kind.layer == LayerKind::Filesystem {
                        format!(
                            "{} signature found, but the filesystem does not open: {e}",
                            kind.display
                        )
                    } else {
                        e.to_string()
                    };
                    self.nodes[n].content.luks = e.luks().cloned();
                    self.end(n, kind, failed(&e), detail);
                    return Ok(());
                }
            };
            match opened {
                Opened::Declined => return Ok(()),
                Opened::Disk { source, info } => self.disk(n, kind, source, info),
                Opened::Table { info, children } => {
                    self.table(n, kind, info, children);
                    return Ok(());
                }
                Opened::Locked(l) => {
                    if self.locked(n, l.as_ref(), None) {
                        continue;
                    }
                    return Ok(());
                }
                Opened::Member(m) => {
                    self.end(n, kind, Verdict::Container, m.summary.clone());
                    self.members[fi].push(PendingMember {
                        node: n,
                        member: m,
                        noted: false,
                    });
                    return Ok(());
                }
                Opened::Filesystem(fs) => {
                    self.readable(n, kind, fs.as_ref(), "");
                    self.nodes[n].filesystem = Some(format);
                    return Ok(());
                }
                Opened::Unsupported(reason) => {
                    self.end(n, kind, Verdict::Unsupported, reason);
                    return Ok(());
                }
            }
        }
    }

    /// The first format that claims node `n`, opened (or, for a filesystem
    /// in a quick scan, only recognised).
    fn probe(&mut self, n: usize, head: &[u8], src: &Source) -> Probed {
        for (fi, f) in FORMATS.iter().enumerate() {
            if !f.probe(head, src.as_ref()) {
                continue;
            }
            let kind = f.kind();
            if self.scan == Scan::Quick && f.opens_lazily() {
                // Opened when used.
                let detail = format!(
                    "{} signature (filesystem not inspected in this scan)",
                    kind.display
                );
                self.end(n, kind, Verdict::Readable, detail);
                self.nodes[n].filesystem = Some(*f);
                return Probed::Recognised;
            }
            let node = &self.nodes[n];
            let ctx = OpenContext {
                id: &node.id,
                parents: self.roots[node.root].spec.parents,
                sector_size: node.sector_size,
            };
            match f.open(src.clone(), &ctx) {
                Ok(Opened::Declined) => continue,
                other => return Probed::Opened(fi, other),
            }
        }
        Probed::Nothing
    }

    /// No format claims node `n`: empty or unknown, and perhaps ciphertext
    /// whose header lies elsewhere.
    fn nothing(&mut self, n: usize, head: &[u8]) {
        if head.iter().take(64 * 1024).all(|&b| b == 0) {
            let detail = "the volume reads as zeros (no filesystem)".into();
            self.end(n, Kind::EMPTY, Verdict::Empty, detail);
            return;
        }
        let detail = "no known filesystem or container signature".into();
        self.end(n, Kind::UNKNOWN, Verdict::Unknown, detail);
        let node = &self.nodes[n];
        if !node.unlocked && ade::may_be_ciphertext(node.partition.as_ref(), head) {
            self.cipher.push(n);
        }
    }

    /// Node `n` shows the filesystem `fs` (opened in a full scan).
    fn readable(&mut self, n: usize, kind: Kind, fs: &dyn flr_fs::Filesystem, what: &str) {
        let info = fs.info();
        let mut detail = format!(
            "{} filesystem{what}: files can be listed and restored",
            info.fs_type
        );
        if info.consistency.may_miss_changes() {
            detail.push_str(&format!("; warning: {}", info.consistency.sentence()));
        }
        self.end(n, kind, Verdict::Readable, detail);
        self.nodes[n].content.subvolumes = fs.subvolumes().unwrap_or_default();
        self.nodes[n].content.fs = Some(info);
    }

    fn fail(&mut self, n: usize, kind: Kind, detail: String) {
        self.end(n, kind, Verdict::Error, detail);
    }

    /// Node `n` ends as `kind` with `verdict` and `detail`.
    fn end(&mut self, n: usize, kind: Kind, verdict: Verdict, detail: String) {
        let c = &mut self.nodes[n].content;
        c.kind = kind;
        c.verdict = verdict;
        c.detail = detail;
    }

    /// The id of an ancestor (or the node itself, for an earlier layer)
    /// that opened the same layer on the same bytes.
    fn cycle(&self, n: usize, print: (usize, u64)) -> Option<String> {
        let mut at = Some(n);
        while let Some(i) = at {
            if self.nodes[i].seen.contains(&print) {
                return Some(self.nodes[i].id.clone());
            }
            at = self.nodes[i].parent;
        }
        None
    }

    fn disk(&mut self, n: usize, kind: Kind, source: Source, info: ContainerInfo) {
        let node = &mut self.nodes[n];
        node.sector_size = info.logical_sector_size.or(node.sector_size);
        node.content.layers.push(kind.name);
        let r = node.root;
        if node.parent.is_none() && !node.unlocked && self.roots[r].container.is_none() {
            self.roots[r].container = Some(info);
            self.roots[r].disk = source.clone();
            // The image's volume is its virtual disk.
            node.size = source.len();
        } else if node.content.container.is_none() {
            node.content.container = Some(info);
        }
        self.nodes[n].source = source;
    }

    fn table(&mut self, n: usize, kind: Kind, info: TableInfo, children: Vec<Child>) {
        let node = &mut self.nodes[n];
        let r = node.root;
        // The disk's own table: its partitions are the image's volumes.
        let own = node.parent.is_none() && !node.unlocked && self.roots[r].table.is_none();
        node.content.kind = kind;
        node.content.verdict = Verdict::Container;
        let scheme = info.scheme.to_uppercase();
        if own {
            node.is_volume = false;
            self.roots[r].table = Some(info);
            self.roots[r].disk = node.source.clone();
        } else {
            node.child_prefix = format!("{}/", node.id);
            node.content.partition_table = Some(info);
        }
        let ids: Vec<String> = children
            .iter()
            .map(|c| format!("{}{}", self.nodes[n].child_prefix, c.id))
            .collect();
        self.nodes[n].content.detail = format!(
            "{scheme} partition table: its partitions are the volumes {}",
            if ids.is_empty() {
                "(none)".to_string()
            } else {
                ids.join(", ")
            }
        );
        let depth = self.nodes[n].depth + self.nodes[n].seen.len();
        for (c, id) in children.into_iter().zip(ids) {
            self.child(n, r, depth, c, id);
        }
    }

    /// Adds a child node (a partition, an LV) and queues it.
    fn child(&mut self, parent: usize, root: usize, depth: usize, c: Child, id: String) -> usize {
        let sector_size = self.nodes[parent].sector_size;
        let mut content = ContentInfo::new(Kind::UNKNOWN, Verdict::Unknown, "");
        let refused = c.refused.is_some();
        if let Some(r) = c.refused {
            content = ContentInfo::new(
                r.kind,
                if r.unsupported {
                    Verdict::Unsupported
                } else {
                    Verdict::Error
                },
                r.reason,
            );
        }
        self.nodes.push(Node {
            child_prefix: format!("{id}/"),
            id,
            root,
            parent: Some(parent),
            depth,
            offset: c.offset,
            size: c.size,
            partition: c.partition,
            source: c.source,
            content,
            filesystem: None,
            is_volume: true,
            sector_size,
            seen: Vec::new(),
            label: c.label.map(|l| (l, if refused { ": " } else { "; " })),
            damage: c.damage,
            unlocked: false,
            refused,
            opener: None,
        });
        let i = self.nodes.len() - 1;
        if !refused {
            self.work.push_back(i);
        }
        i
    }

    /// Tries keys on the locked node `n`; true when it opened (its bytes are
    /// then the plaintext, to be probed). `header`: where a detached header
    /// came from.
    fn locked(&mut self, n: usize, l: &dyn Locked, header: Option<String>) -> bool {
        match self.try_unlock(n, l, header) {
            Ok(()) => true,
            Err(()) => false,
        }
    }

    fn try_unlock(&mut self, n: usize, l: &dyn Locked, header: Option<String>) -> Result<(), ()> {
        let id = self.nodes[n].id.clone();
        let mut enc = l.info();
        if header.is_some() {
            enc.header = header;
        }
        let hint = key_hint(&id, l);
        let candidates = self.keys.candidates(&id, l);
        let attempts: Vec<(Option<flr_keys::KeyMaterial>, String)> = if candidates.is_empty() {
            if l.may_open_without_key() {
                vec![(None, "clear key (protection suspended)".to_string())]
            } else {
                Vec::new()
            }
        } else {
            candidates
                .into_iter()
                .map(|(k, how)| (Some(k), how))
                .collect()
        };
        let mut failures = Vec::new();
        if attempts.is_empty() {
            failures.push(format!("{}: locked; {hint}", l.describe()));
        }
        let several = attempts.len() > 1;
        for (key, how) in &attempts {
            match l.unlock(key.as_ref()) {
                Ok(plain) => {
                    enc.unlocked_with = Some(how.clone());
                    let node = &mut self.nodes[n];
                    node.content.layers.push(l.kind().name);
                    node.content.encryption = Some(enc);
                    node.content.luks = l.luks();
                    node.unlocked = true;
                    node.source = plain;
                    return Ok(());
                }
                Err(e) if key.is_none() => failures.push(format!("{e}; {hint}")),
                Err(e) if several || l.luks().is_some() => failures.push(format!("{how}: {e}")),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let node = &mut self.nodes[n];
        node.content.kind = l.kind();
        node.content.verdict = Verdict::Locked;
        node.content.luks = l.luks();
        node.content.encryption = Some(enc);
        node.content.detail = failures.join("; ");
        Err(())
    }

    /// Opens node `n` with a detached header, then goes on scanning what is
    /// inside. `explicit`: named by the user (errors are the node's).
    fn with_header(
        &mut self,
        n: usize,
        header: Source,
        origin: String,
        explicit: bool,
    ) -> Result<(), EngineError> {
        let data = self.nodes[n].source.clone();
        let luks = flr_luks::FORMAT.kind();
        match detached(header, data) {
            Some(Ok(Opened::Locked(l))) => {
                if self.locked(n, l.as_ref(), Some(origin)) {
                    return self.process(n);
                }
                Ok(())
            }
            Some(Err(e)) => {
                self.nodes[n].content.luks = e.luks().cloned();
                let detail = format!("detached LUKS header {origin}: {e}");
                self.end(n, luks, failed(&e), detail);
                Ok(())
            }
            Some(Ok(_)) | None => {
                if explicit {
                    let detail = format!("detached LUKS header {origin}: not a LUKS header");
                    self.fail(n, luks, detail);
                }
                Ok(())
            }
        }
    }

    /// Asks the header providers for detached headers of the nodes that
    /// look like ciphertext; true when a node was opened (to scan on).
    fn find_headers(&mut self) -> bool {
        let pending: Vec<usize> = self
            .cipher
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].content.verdict == Verdict::Unknown)
            .collect();
        let readable = self.nodes.iter().filter(|v| v.filesystem.is_some()).count();
        if pending.is_empty() || (pending.len(), readable) == self.headers_looked {
            return false;
        }
        self.headers_looked = (pending.len(), readable);
        let filesystems: Vec<(String, Volume)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, v)| v.filesystem.is_some() && v.content.verdict == Verdict::Readable)
            .map(|(i, _)| (self.nodes[i].id.clone(), self.volume(i)))
            .collect();
        let mut found: Vec<FoundHeader> = Vec::new();
        for p in HEADER_PROVIDERS {
            for h in p.headers(&filesystems) {
                if self.headers_seen.insert((h.holder.clone(), h.path)) {
                    found.push(h);
                }
            }
        }
        let mut progress = false;
        for h in found {
            let origin = format!("{}:/{} (found automatically: ADE layout)", h.holder, h.path);
            let candidates: Vec<usize> = pending
                .iter()
                .copied()
                .filter(|&i| {
                    self.nodes[i].id != h.holder
                        && self.nodes[i].content.verdict == Verdict::Unknown
                })
                .collect();
            let chosen = match candidates.as_slice() {
                [] => None,
                [one] => Some(*one),
                many => many
                    .iter()
                    .copied()
                    .filter(|&i| self.keys.has_key_for(&self.nodes[i].id))
                    .find(|&i| self.opens_to_something(i, &h.source)),
            };
            match chosen {
                Some(i) => {
                    // Errors here are the node's own (a broken header).
                    let _ = self.with_header(i, h.source.clone(), origin, false);
                    progress = true;
                }
                None => {
                    for &i in &candidates {
                        let v = &mut self.nodes[i];
                        v.content.detail = format!(
                            "{}; it may be the encrypted root whose LUKS header is {origin}: \
                             give its key with --key {}=passphrase-file:FILE to check",
                            v.content.detail, v.id
                        );
                    }
                }
            }
        }
        progress
    }

    /// Whether node `i`, opened with `header` and the keys given, holds
    /// something a format recognises (for choosing among several
    /// ciphertext candidates).
    fn opens_to_something(&self, i: usize, header: &Source) -> bool {
        let node = &self.nodes[i];
        let Some(Ok(Opened::Locked(l))) = detached(header.clone(), node.source.clone()) else {
            return false;
        };
        self.keys
            .candidates(&node.id, l.as_ref())
            .into_iter()
            .filter_map(|(k, _)| l.unlock(Some(&k)).ok())
            .any(|plain| {
                read_head(plain.as_ref())
                    .is_ok_and(|head| FORMATS.iter().any(|f| f.probe(&head, plain.as_ref())))
            })
    }

    /// Assembles the groups of every volume-manager format: the complete
    /// ones, or (`last`) the first incomplete one. True when a group was
    /// emitted.
    fn assemble(&mut self, last: bool) -> bool {
        for (fi, format) in FORMATS.iter().enumerate() {
            if self.members[fi].is_empty() {
                continue;
            }
            let groups = {
                let refs: Vec<MemberRef<'_>> = self.members[fi]
                    .iter()
                    .map(|m| MemberRef {
                        location: &self.nodes[m.node].id,
                        payload: m.member.payload.as_ref(),
                    })
                    .collect();
                format.assemble(&refs)
            };
            let mut emitted_one = false;
            for g in groups {
                if self.emitted.contains(&(fi, g.key.clone())) {
                    self.late_members(fi, &g);
                    continue;
                }
                if !g.complete && !last {
                    continue;
                }
                self.emit(fi, g);
                emitted_one = true;
                if last {
                    return true;
                }
            }
            if emitted_one {
                return true;
            }
        }
        false
    }

    fn emit(&mut self, fi: usize, g: flr_layer::Group) {
        self.emitted.insert((fi, g.key.clone()));
        let mut holder: Option<usize> = None;
        for (k, note) in &g.member_notes {
            let Some(m) = self.members[fi].get_mut(*k) else {
                continue;
            };
            m.noted = true;
            let n = m.node;
            holder.get_or_insert(n);
            let c = &mut self.nodes[n].content;
            c.verdict = Verdict::Container;
            c.detail = note.clone();
        }
        let mut fs_host = None;
        if let Some(gfs) = g.filesystem {
            if let Some(m) = self.members[fi].get_mut(gfs.member) {
                m.noted = true;
                let n = m.node;
                fs_host = Some(n);
                let devices = g.member_notes.len() + 1;
                let what = if devices > 1 {
                    format!(" over {devices} devices")
                } else {
                    String::new()
                };
                if self.scan == Scan::Quick {
                    let detail = format!(
                        "{}{what} (filesystem not inspected in this scan)",
                        gfs.kind.display
                    );
                    self.end(n, gfs.kind, Verdict::Readable, detail);
                } else {
                    match (gfs.open)() {
                        Ok(fs) => self.readable(n, gfs.kind, fs.as_ref(), &what),
                        Err(e) => {
                            let detail = format!("{}{what} does not open: {e}", gfs.kind.display);
                            self.fail(n, gfs.kind, detail);
                        }
                    }
                }
                if self.nodes[n].content.verdict == Verdict::Readable {
                    self.nodes[n].opener = Some(gfs.open);
                }
            }
        }
        let Some(report) = g.report else { return };
        let Some(holder) = holder.or_else(|| self.members[fi].first().map(|m| m.node)) else {
            return;
        };
        let depth = g
            .member_notes
            .iter()
            .filter_map(|(k, _)| self.members[fi].get(*k))
            .map(|m| self.nodes[m.node].depth + self.nodes[m.node].seen.len())
            .max()
            .unwrap_or(0);
        let mut ids: Vec<usize> = fs_host.into_iter().collect();
        for c in g.children {
            // The group's volume lies on the member its id starts with.
            let parent = self.members[fi]
                .iter()
                .map(|m| m.node)
                .filter(|&n| c.id.starts_with(&format!("{}/", self.nodes[n].id)))
                .max_by_key(|&n| self.nodes[n].id.len())
                .unwrap_or(holder);
            let root = self.nodes[parent].root;
            let id = c.id.clone();
            ids.push(self.child(parent, root, depth, c, id));
        }
        let root = self.nodes[holder].root;
        self.groups.push((root, report, ids));
    }

    /// Members of a group already assembled, found only afterwards (inside
    /// a volume of the group itself, or of a group assembled after it):
    /// they are not part of it, and their volume says so.
    fn late_members(&mut self, fi: usize, g: &flr_layer::Group) {
        for (k, _) in &g.member_notes {
            let Some(m) = self.members[fi].get_mut(*k) else {
                continue;
            };
            if m.noted {
                continue;
            }
            m.noted = true;
            let n = m.node;
            let c = &mut self.nodes[n].content;
            c.verdict = Verdict::Error;
            c.detail = format!(
                "{}: found after its group was assembled without it (inside one of the group's own volumes?), so it is not used",
                c.detail
            );
        }
    }

    fn volume(&self, i: usize) -> Volume {
        let n = &self.nodes[i];
        Volume {
            id: n.id.clone(),
            offset: n.offset,
            size: n.size,
            partition: n.partition.clone(),
            content: n.content.clone(),
            parent: n.parent.map(|p| self.nodes[p].id.clone()),
            source: n.source.clone(),
            filesystem: n.filesystem,
            refused: n.refused,
            opener: n.opener.clone(),
        }
    }

    fn finish(mut self) -> Vec<Image> {
        for n in &mut self.nodes {
            if let Some((label, sep)) = n.label.take() {
                n.content.detail = format!("{label}{sep}{}", n.content.detail);
            }
            if let Some(d) = n.damage.take() {
                n.content.verdict = Verdict::Error;
                n.content.detail = format!("{d}; {}", n.content.detail);
            }
        }
        let mut images: Vec<Image> = self
            .roots
            .iter()
            .map(|r| Image {
                location: r.spec.location.clone(),
                container: r
                    .container
                    .clone()
                    .unwrap_or_else(|| ContainerInfo::raw(r.spec.source.len())),
                table: r.table.clone(),
                volumes: Vec::new(),
                groups: Vec::new(),
                disk: r.disk.clone(),
                prefix: r.spec.prefix.clone(),
                keys: self.keys.clone(),
                scan: self.scan,
                nested: Default::default(),
                base: None,
            })
            .collect();
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_volume {
                let r = self.nodes[i].root;
                let v = self.volume(i);
                images[r].volumes.push(v);
            }
        }
        for (root, report, ids) in std::mem::take(&mut self.groups) {
            let states = ids
                .iter()
                .map(|&i| (self.nodes[i].id.clone(), self.nodes[i].content.verdict))
                .collect();
            images[root].groups.push(Group { report, states });
        }
        images
    }
}

/// The verdict of a node whose layer failed to open.
fn failed(e: &LayerError) -> Verdict {
    if e.is_unsupported() {
        Verdict::Unsupported
    } else {
        Verdict::Error
    }
}

/// `give its key with --key p3=passphrase-file:FILE or p3=volume-key:HEX`.
fn key_hint(id: &str, l: &dyn Locked) -> String {
    let forms: Vec<String> = l
        .accepts()
        .iter()
        .map(|k| format!("{id}={}", k.cli_form()))
        .collect();
    let list = match forms.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    };
    format!("give its key with --key {list}")
}

/// A stable fingerprint of a layer: the format, the node's size and its
/// first 4 KiB.
fn fingerprint(format: usize, head: &[u8], len: u64) -> (usize, u64) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    len.hash(&mut h);
    head[..head.len().min(4096)].hash(&mut h);
    (format, h.finish())
}

/// Opens `data` with the detached `header`, through the format whose
/// probe the header matches.
fn detached(header: Source, data: Source) -> Option<Result<Opened, LayerError>> {
    let head = read_head(header.as_ref()).ok()?;
    FORMATS
        .iter()
        .filter(|f| f.probe(&head, header.as_ref()))
        .find_map(|f| f.open_detached(header.clone(), data.clone()))
}
