//! LVM2's text metadata format: nested sections of `key = value` lines,
//! values being integers, quoted strings or `[ ... ]` lists, `#` comments.
//!
//! ```text
//! rootvg {
//!     id = "YG9DU3-Aq1I-..."
//!     seqno = 3
//!     physical_volumes { pv0 { id = "..." pe_start = 2048 pe_count = 23 } }
//! }
//! ```

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Section(Section),
}

/// A section: its entries in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Section(pub(crate) Vec<(String, Value)>);

impl Section {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub(crate) fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub(crate) fn u64(&self, key: &str) -> Option<u64> {
        self.int(key).and_then(|i| u64::try_from(i).ok())
    }
    pub(crate) fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub(crate) fn list(&self, key: &str) -> Option<&[Value]> {
        match self.get(key)? {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    pub(crate) fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key)? {
            Value::Section(s) => Some(s),
            _ => None,
        }
    }
    pub(crate) fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.0.iter().filter_map(|(k, v)| match v {
            Value::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }
    /// The strings of a list value (`status = ["READ", "WRITE"]`).
    pub(crate) fn flags(&self, key: &str) -> Vec<&str> {
        self.list(key)
            .unwrap_or(&[])
            .iter()
            .filter_map(|v| match v {
                Value::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Nesting limit (real metadata nests four deep).
const MAX_DEPTH: usize = 16;

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

/// Parses a metadata text; `Err` names the byte where it went wrong.
pub(crate) fn parse(text: &[u8]) -> Result<Section, String> {
    let mut p = Parser { b: text, pos: 0 };
    let s = p.section(0)?;
    p.skip_ws();
    if p.pos < p.b.len() {
        return Err(format!("unexpected '}}' at byte {}", p.pos));
    }
    Ok(s)
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if c == b'#' {
                while self.b.get(self.pos).is_some_and(|&c| c != b'\n') {
                    self.pos += 1;
                }
            } else if c.is_ascii_whitespace() || c == 0 {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        let start = self.pos;
        while self
            .b
            .get(self.pos)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || b"_-.+".contains(&c))
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(format!("expected a name at byte {start}"));
        }
        Ok(String::from_utf8_lossy(&self.b[start..self.pos]).into_owned())
    }

    /// Entries until `}` (consumed) or the end (depth 0 only).
    fn section(&mut self, depth: usize) -> Result<Section, String> {
        if depth > MAX_DEPTH {
            return Err(format!("sections nested too deep at byte {}", self.pos));
        }
        let mut s = Section::default();
        loop {
            self.skip_ws();
            match self.b.get(self.pos) {
                None if depth == 0 => return Ok(s),
                None => return Err("unterminated section".into()),
                Some(b'}') if depth > 0 => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(b'}') => return Ok(s),
                _ => {}
            }
            let key = self.ident()?;
            self.skip_ws();
            match self.b.get(self.pos) {
                Some(b'{') => {
                    self.pos += 1;
                    let sub = self.section(depth + 1)?;
                    s.0.push((key, Value::Section(sub)));
                }
                Some(b'=') => {
                    self.pos += 1;
                    self.skip_ws();
                    let v = self.value(true)?;
                    s.0.push((key, v));
                }
                _ => {
                    return Err(format!(
                        "expected '=' or '{{' after {key:?} at byte {}",
                        self.pos
                    ))
                }
            }
        }
    }

    fn value(&mut self, list_ok: bool) -> Result<Value, String> {
        match self.b.get(self.pos) {
            Some(b'"') => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.b.get(self.pos) {
                        None => return Err("unterminated string".into()),
                        Some(b'"') => {
                            self.pos += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let c = *self.b.get(self.pos + 1).ok_or("unterminated string")?;
                            out.push(c);
                            self.pos += 2;
                        }
                        Some(&c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                    }
                }
                Ok(Value::Str(String::from_utf8_lossy(&out).into_owned()))
            }
            Some(b'[') if list_ok => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    match self.b.get(self.pos) {
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        Some(b',') => self.pos += 1,
                        None => return Err("unterminated list".into()),
                        _ => items.push(self.value(false)?),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || *c == b'-' => {
                let start = self.pos;
                self.pos += 1;
                while self
                    .b
                    .get(self.pos)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
                {
                    self.pos += 1;
                }
                let t = String::from_utf8_lossy(&self.b[start..self.pos]).into_owned();
                // Floats appear only in settings flr does not use: keep their integer part.
                let whole = t.split('.').next().unwrap_or("");
                whole
                    .parse::<i64>()
                    .map(Value::Int)
                    .map_err(|_| format!("bad number {t:?} at byte {start}"))
            }
            _ => Err(format!("expected a value at byte {}", self.pos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_sections_lists_comments() {
        let t = br#"
vg { # comment
  id = "a-b"
  seqno = 7
  status = ["READ", "WRITE"]
  stripes = [
    "pv0", 0,
    "pv1", 12
  ]
  sub { x = -1 f = 1.5 s = "q\"uote" }
}
contents = "Text Format Volume Group"
"#;
        let s = parse(t).unwrap();
        let vg = s.section("vg").unwrap();
        assert_eq!(vg.str("id"), Some("a-b"));
        assert_eq!(vg.int("seqno"), Some(7));
        assert_eq!(vg.flags("status"), ["READ", "WRITE"]);
        assert_eq!(vg.list("stripes").unwrap()[3], Value::Int(12));
        let sub = vg.section("sub").unwrap();
        assert_eq!(sub.int("x"), Some(-1));
        assert_eq!(sub.int("f"), Some(1));
        assert_eq!(sub.str("s"), Some("q\"uote"));
        assert!(parse(b"vg { id = ").is_err());
        assert!(parse(b"vg { ").is_err());
        assert!(parse(&b"a{".repeat(100)).is_err());
        assert!(parse(b"}").is_err());
    }
}
