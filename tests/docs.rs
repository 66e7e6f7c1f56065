//! The docs read the code's lists: every format the scanner probes is in
//! ARCHITECTURE.md's format table, and every crate in its map.

fn architecture() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md")).unwrap()
}

#[test]
fn every_format_of_the_engine_list_is_documented() {
    let doc = architecture();
    for f in flr_engine::FORMATS {
        let k = f.kind();
        assert!(
            doc.contains(&format!("| `{}`", k.name)),
            "ARCHITECTURE.md's format table lacks `{}` ({})",
            k.name,
            k.display
        );
    }
}

#[test]
fn every_crate_is_on_the_map() {
    let doc = architecture();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crates");
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            doc.contains(&format!("crates/{name}")),
            "ARCHITECTURE.md's map lacks crates/{name}"
        );
    }
}
