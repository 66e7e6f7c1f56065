//! The page-range map of a page blob: which byte ranges were ever written.
//! Everything else reads as zeros, so flr never asks for it.

/// Written ranges, sorted, merged, as half-open `[start, end)`.
#[derive(Debug, Clone)]
pub(crate) struct PageMap {
    written: Vec<(u64, u64)>,
}

impl PageMap {
    /// From inclusive `(start, end)` pairs as Get Page Ranges returns them.
    pub(crate) fn new(mut inclusive: Vec<(u64, u64)>, len: u64) -> Self {
        inclusive.sort_unstable();
        let mut written: Vec<(u64, u64)> = Vec::with_capacity(inclusive.len());
        for (s, e) in inclusive {
            let e = e.saturating_add(1).min(len);
            if s >= e {
                continue;
            }
            match written.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => written.push((s, e)),
            }
        }
        PageMap { written }
    }

    /// True when no byte of `[off, off + len)` was ever written.
    pub(crate) fn unwritten(&self, off: u64, len: u64) -> bool {
        let end = off.saturating_add(len);
        // The first written range that ends after `off`.
        let i = self.written.partition_point(|&(_, e)| e <= off);
        match self.written.get(i) {
            Some(&(s, _)) => s >= end,
            None => true,
        }
    }

    /// The written parts of `[off, end)`, clipped to it, with runs closer
    /// than `gap` bytes joined (reading a short unwritten gap costs less
    /// than another request; it reads as zeros either way).
    pub(crate) fn written_runs(&self, off: u64, end: u64, gap: u64) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let i = self.written.partition_point(|&(_, e)| e <= off);
        for &(s, e) in self.written[i..].iter().take_while(|&&(s, _)| s < end) {
            let (s, e) = (s.max(off), e.min(end));
            match runs.last_mut() {
                Some(last) if s - last.1 < gap => last.1 = e,
                _ => runs.push((s, e)),
            }
        }
        runs
    }

    /// Total written bytes.
    pub(crate) fn written_bytes(&self) -> u64 {
        self.written.iter().map(|(s, e)| e - s).sum()
    }
}

/// Inclusive written ranges and the continuation marker.
pub(crate) type PageList = (Vec<(u64, u64)>, Option<String>);

/// Parses a Get Page Ranges response body: the `PageRange` start/end pairs
/// (and, for a diff, `ClearRange`: pages cleared since the older snapshot
/// changed too) and the `NextMarker` continuation, if any.
pub(crate) fn parse_page_list(body: &[u8], with_cleared: bool) -> Option<PageList> {
    let s = std::str::from_utf8(body).ok()?;
    if !s.contains("<PageList") {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let page = rest.find("<PageRange>").map(|i| (i, "PageRange"));
        let clear = if with_cleared {
            rest.find("<ClearRange>").map(|i| (i, "ClearRange"))
        } else {
            None
        };
        let Some((i, name)) = [page, clear].into_iter().flatten().min() else {
            break;
        };
        let after = &rest[i + name.len() + 2..];
        let j = after.find(&format!("</{name}>"))?;
        let item = &after[..j];
        let start = tag(item, "Start")?.trim().parse().ok()?;
        let end = tag(item, "End")?.trim().parse().ok()?;
        out.push((start, end));
        rest = &after[j..];
    }
    let next = tag(s, "NextMarker").map(|m| m.trim().to_string());
    Some((out, next.filter(|m| !m.is_empty())))
}

fn tag<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = s.find(&open)? + open.len();
    let end = s[start..].find(&format!("</{name}>"))? + start;
    Some(&s[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_runs_clip_and_join() {
        let m = PageMap::new(
            vec![
                (0, 511),
                (4096, 8191),
                (10240, 20479),
                (1 << 20, (2 << 20) - 1),
            ],
            4 << 20,
        );
        assert_eq!(
            m.written_runs(0, 4 << 20, 0),
            vec![(0, 512), (4096, 8192), (10240, 20480), (1 << 20, 2 << 20)]
        );
        assert_eq!(
            m.written_runs(256, 12288, 3000),
            vec![(256, 512), (4096, 12288)]
        );
        assert_eq!(m.written_runs(256, 12288, 4096), vec![(256, 12288)]);
        assert_eq!(m.written_runs(0, 4 << 20, 1 << 20), vec![(0, 2 << 20)]);
        assert_eq!(m.written_runs(20480, 1 << 20, 4096), vec![]);
        assert_eq!(m.written_runs(3 << 20, 4 << 20, 4096), vec![]);
    }

    #[test]
    fn parse_and_query() {
        let xml = br#"<?xml version="1.0" encoding="utf-8"?><PageList><PageRange><Start>0</Start><End>511</End></PageRange><PageRange><Start>512</Start><End>1023</End></PageRange><PageRange><Start>1048576</Start><End>1052671</End></PageRange><NextMarker /></PageList>"#;
        let (r, next) = parse_page_list(xml, false).unwrap();
        assert_eq!(r, vec![(0, 511), (512, 1023), (1_048_576, 1_052_671)]);
        assert_eq!(next, None);
        let m = PageMap::new(r, 2 << 20);
        assert_eq!(m.written, vec![(0, 1024), (1_048_576, 1_052_672)]);
        assert_eq!(m.written_bytes(), 1024 + 4096);
        assert!(!m.unwritten(0, 1));
        assert!(!m.unwritten(1023, 1));
        assert!(m.unwritten(1024, 1_048_576 - 1024));
        assert!(!m.unwritten(1024, 1_048_576 - 1023));
        assert!(m.unwritten(1_052_672, 100));
        assert!(!m.unwritten(0, 2 << 20));
        let (_, next) =
            parse_page_list(b"<PageList><NextMarker>abc</NextMarker></PageList>", false).unwrap();
        assert_eq!(next.as_deref(), Some("abc"));
        assert!(parse_page_list(b"<Error/>", false).is_none());
        let diff = b"<PageList><ClearRange><Start>0</Start><End>511</End></ClearRange><PageRange><Start>1024</Start><End>2047</End></PageRange><ClearRange><Start>4096</Start><End>8191</End></ClearRange><NextMarker>2!9</NextMarker></PageList>";
        let (r, next) = parse_page_list(diff, true).unwrap();
        assert_eq!(r, vec![(0, 511), (1024, 2047), (4096, 8191)]);
        assert_eq!(next.as_deref(), Some("2!9"));
        assert_eq!(parse_page_list(diff, false).unwrap().0, vec![(1024, 2047)]);
        assert!(parse_page_list(
            b"<PageList><PageRange><Start>x</Start><End>1</End></PageRange></PageList>",
            false
        )
        .is_none());
    }
}
