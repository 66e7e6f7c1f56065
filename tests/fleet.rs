//! `flr fleet`: plan, run and report, end to end through the binary.
//!
//! - Resource Manager (flr-kvtest) lists snapshots in pages, throttles once
//!   (429 with Retry-After), and counts active exports per incremental
//!   family: twelve snapshots of one family run by twelve tasks at once
//!   never hold more than five exports (and without the plan's family the
//!   server refuses some: the limit is real);
//! - a real Slurm cluster on this machine (`scripts/slurm-up`) runs the
//!   array (`deploy/slurm/flr-fleet.sbatch`) over local images, Azurite
//!   blobs and snapshots behind the test Resource Manager and Key Vault:
//!   plain, ADE unlocked through the vault, a disabled KEK version, a
//!   corrupted blob, a task killed mid-run and requeued by Slurm, an item
//!   never run; the report names each outcome, and its HTML opens in
//!   headless Chromium (screenshot, no console errors);
//! - the report over 10,000 synthetic results (time and peak memory);
//! - the deploy files: the Kubernetes Indexed Job against the 1.33 schemas
//!   (`kubernetes-validate`), the Batch job and tasks through Microsoft's
//!   `azure-batch` models, the Slurm script's syntax.
//!
//! Each tier prints SKIPPED when what it needs is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use flr_blob::{DEV_ACCOUNT, DEV_KEY};
use flr_kvtest::azurite::{azurite, Azurite};
use flr_kvtest::TestVault;

use crate::util::{fixture, p, stderr, stdout};

const CLIENT: &str = "flr-fleet-app";
const CLIENT_SECRET: &str = "fleet-secret-7";
const SUB: &str = "5d4c3b2a-0000-4000-8000-00000000f1ee";

fn skip(test: &str, why: &str) {
    flr_testdata::loud(&format!("SKIPPED fleet::{test}: {why}"));
}

fn json_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The test vault and Resource Manager, Azurite, and a config for them.
struct Cloud {
    kv: TestVault,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    az: &'static Azurite,
    container: String,
}

impl Cloud {
    fn new(container: &str) -> Option<Cloud> {
        let az = azurite()?;
        let kv = TestVault::start();
        kv.add_client(CLIENT, CLIENT_SECRET);
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("flr.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[vault]]\nurl = \"{url}\"\ncredential = \"client-secret\"\nca_file = \"{ca}\"\n\n\
                 [policy]\nvaults = [\"https://127.0.0.1:*\"]\n\n\
                 [audit]\npath = \"{audit}\"\n\n\
                 [azure]\nresource_manager = \"{url}\"\ncredential = \"client-secret\"\ntenant = \"{tenant}\"\nca_file = \"{ca}\"\naccess_seconds = 600\n",
                url = kv.url(),
                ca = kv.ca_path().display(),
                tenant = kv.tenant(),
                audit = dir.path().join("audit.jsonl").display(),
            ),
        )
        .unwrap();
        let container = format!("{container}-{}", std::process::id());
        flr_blob::upload::create_container(&format!(
            "{}/{container}?{}",
            az.endpoint,
            az.write_sas()
        ))
        .expect("create container");
        Some(Cloud {
            kv,
            dir,
            cfg,
            az,
            container,
        })
    }

    /// What every flr (and every Slurm task) needs in its environment.
    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_CLIENT_ID", CLIENT.into()),
            ("AZURE_CLIENT_SECRET", CLIENT_SECRET.into()),
            ("AZURE_AUTHORITY_HOST", self.kv.url()),
            ("FLR_CONFIG", p(&self.cfg).into()),
        ]
    }

    fn flr(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flr"));
        c.args(args)
            .envs(self.envs())
            .env_remove("AZURE_TENANT_ID")
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("AZ_BATCH_TASK_ID");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.flr(args).output().unwrap();
        assert_ne!(out.status.code(), Some(101), "panic: {}", stderr(&out));
        out
    }

    /// Uploads `path` as page blob `name`; returns a read SAS URL for it.
    fn upload(&self, name: &str, path: &Path) -> String {
        let src = flr_io::FileSource::open(path).unwrap();
        flr_blob::upload::put_page_blob(&self.az.writable_url(&self.container, name), &src)
            .expect("upload");
        let sas = flr_blob::blob_service_sas(
            DEV_ACCOUNT,
            DEV_KEY,
            &self.container,
            name,
            &flr_blob::SasTerms::for_next("r", Duration::from_secs(3600), "https,http"),
        )
        .unwrap();
        format!("{}/{}/{name}?{sas}", self.az.endpoint, self.container)
    }

    /// A container URL with a SAS that may write (for the results).
    fn results_url(&self, prefix: &str) -> String {
        format!(
            "{}/{}/{prefix}?{}",
            self.az.endpoint,
            self.container,
            self.az.write_sas()
        )
    }

    /// An ADE snapshot's key chain: a KEK (its own), the wrapped BEK.
    fn ade_settings(&self, kek_name: &str) -> (serde_json::Value, String) {
        let pass = std::fs::read(flr_testdata::testdata_dir().join("luks/pass-ade.bin")).unwrap();
        let kid = self.kv.create_rsa_key(kek_name, 2048);
        let wrapped = self.kv.wrap(&kid, "RSA-OAEP", &pass);
        let secret = self.kv.set_secret(
            &format!("{kek_name}-bek"),
            &wrapped,
            Some("Wrapped BEK"),
            &[
                ("DiskEncryptionKeyFileName", "LinuxPassPhraseFileName"),
                ("DiskEncryptionKeyEncryptionKeyURL", &kid),
                ("DiskEncryptionKeyEncryptionAlgorithm", "RSA-OAEP"),
            ],
        );
        let vault = format!(
            "/subscriptions/{SUB}/resourceGroups/rg-keys/providers/Microsoft.KeyVault/vaults/test"
        );
        (
            serde_json::json!({
                "enabled": true,
                "encryptionSettingsVersion": "1.1",
                "encryptionSettings": [{
                    "diskEncryptionKey": {"secretUrl": secret, "sourceVault": {"id": vault}},
                    "keyEncryptionKey": {"keyUrl": kid, "sourceVault": {"id": vault}}
                }]
            }),
            kid,
        )
    }
}

fn snapshot_id(rg: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/snapshots/{name}")
}

fn disk_id(rg: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{name}")
}

/// A snapshot's properties as `az snapshot show` has them.
fn snapshot_props(
    source_disk: &str,
    time: &str,
    tags: serde_json::Value,
    ade: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "creationData": {"createOption": "CopyStart", "sourceResourceId": source_disk},
        "incremental": true,
        "timeCreated": time,
        "diskSizeGB": 1,
        "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
        "tags": tags,
    });
    if let Some(a) = ade {
        v["encryptionSettingsCollection"] = a;
    }
    v
}

fn read_spec(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("flr_fleet_spec").is_none())
        .collect()
}

#[test]
fn plan_lists_snapshots_and_twelve_tasks_hold_at_most_five_exports() {
    let Some(c) = Cloud::new("flr-fleet-limit") else {
        return skip(
            "plan_lists_snapshots_and_twelve_tasks_hold_at_most_five_exports",
            "Azurite is not installed (npm install -g azurite)",
        );
    };
    let sas = c.upload("demo.vhdx", &fixture("disks/demo.vhdx.zst"));
    let disk_a = disk_id("rg-prod", "vm1-data0");
    let disk_b = disk_id("rg-prod", "vm2-os");
    let mut snaps = Vec::new();
    for i in 0..12 {
        let id = snapshot_id("rg-prod", &format!("vm1-data0-{i:02}"));
        let props = snapshot_props(
            &disk_a,
            &format!("2026-11-27T{i:02}:00:00.1234567+00:00"),
            serde_json::json!({"env": "prod", "vm": "vm1"}),
            None,
        );
        c.kv.add_disk_resource(&id, props, &sas);
        // Exports overlap as in Azure: a revoke takes a moment.
        c.kv.delay_revokes(&id, Duration::from_millis(1500));
        snaps.push(id);
    }
    for (i, tag) in [(0, "dev"), (1, "dev")] {
        let id = snapshot_id("rg-prod", &format!("vm2-os-{i}"));
        c.kv.add_disk_resource(
            &id,
            snapshot_props(
                &disk_b,
                &format!("2026-11-26T0{i}:00:00Z"),
                serde_json::json!({"env": tag, "vm": "vm2"}),
                None,
            ),
            &sas,
        );
    }
    // Another resource group's snapshot is not listed for rg-prod.
    c.kv.add_disk_resource(
        &snapshot_id("rg-other", "x"),
        snapshot_props(&disk_b, "2026-11-27T00:00:00Z", serde_json::json!({}), None),
        &sas,
    );
    c.kv.set_page_size(5);

    // The newest per disk, through three pages and one throttled request.
    let spec = c.dir.path().join("newest.jsonl");
    let plan = |extra: &[&str]| {
        let mut args = vec!["fleet", "plan", "--subscription", SUB, "-o", p(&spec)];
        args.extend_from_slice(extra);
        let out = c.run(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    c.kv.fail_next_arm(429, Some(1), 1);
    let t = Instant::now();
    let out = plan(&["-g", "rg-prod"]);
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    let items = read_spec(&spec);
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["vm1-data0-11", "vm2-os-1"], "{}", stderr(&out));
    assert_eq!(items[0]["vm"], "vm1");
    assert_eq!(items[0]["disk"], "vm1-data0");
    assert_eq!(items[0]["snapshot_time"], "2026-11-27T11:00:00Z");
    assert_eq!(items[0]["family"], disk_a.to_ascii_lowercase());
    let listed =
        c.kv.requests()
            .iter()
            .filter(|r| r.path.ends_with("/snapshots"))
            .map(|r| r.status)
            .collect::<Vec<_>>();
    assert_eq!(listed, [429, 200, 200, 200], "pages and the retry");

    // Every prod snapshot since 02:00 (tag and window): ten of them.
    plan(&[
        "--tag",
        "env=prod",
        "--all",
        "--since",
        "2026-11-27T02:00:00Z",
    ]);
    assert_eq!(read_spec(&spec).len(), 10);
    plan(&["-g", "rg-prod", "--tag", "env=prod", "--all"]);
    let items = read_spec(&spec);
    assert_eq!(items.len(), 12);
    let slots: Vec<u64> = items.iter().map(|i| i["slot"].as_u64().unwrap()).collect();
    assert_eq!(slots, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);

    // Twelve tasks at once, results and leases in a blob container.
    let results = c.results_url("night-1");
    let run_all = |spec: &Path, results: &str| -> Vec<Output> {
        let children: Vec<_> = (0..12)
            .map(|i| {
                c.flr(&[
                    "fleet",
                    "run",
                    p(spec),
                    "--index",
                    &i.to_string(),
                    "--results",
                    results,
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        children
            .into_iter()
            .map(|ch| ch.wait_with_output().unwrap())
            .collect()
    };
    let t = Instant::now();
    let outs = run_all(&spec, &results);
    for o in &outs {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
        assert!(
            !stderr(o).contains("sig="),
            "a SAS was printed: {}",
            stderr(o)
        );
    }
    let peak = c.kv.family_peak(&disk_a);
    assert!(
        peak <= 5,
        "{peak} exports of one family were active at once"
    );
    assert_eq!(peak, 5, "twelve tasks should have filled all five slots");
    assert_eq!(c.kv.grants_over_limit(), 0);
    for id in &snaps {
        let (granted, revoked, active) = c.kv.disk_access(id);
        assert_eq!((granted, revoked, active), (1, 1, false), "{id}");
    }
    let waited = outs
        .iter()
        .filter(|o| stderr(o).contains("export slots of family"))
        .count();
    assert!(waited >= 1, "nobody waited for a slot");
    eprintln!(
        "fleet: 12 tasks of one family in {:.1} s, peak {peak} exports, {waited} waited",
        t.elapsed().as_secs_f64()
    );
    // The report from the container; every lease was given back.
    let rep = c.dir.path().join("report");
    let out = c.run(&[
        "fleet",
        "report",
        &results,
        "--spec",
        p(&spec),
        "-o",
        p(&rep),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let sum = json_file(&rep.join("summary.json"));
    assert_eq!(sum["outcomes"]["passed"], 12, "{sum}");
    let leases = Command::new("curl")
        .arg("-sS")
        .arg(format!(
            "{}/{}?restype=container&comp=list&prefix=night-1/leases/&{}",
            c.az.endpoint,
            c.container,
            c.az.write_sas()
        ))
        .output();
    if let Ok(l) = leases {
        assert!(
            !stdout(&l).contains("<Name>"),
            "leases left: {}",
            stdout(&l)
        );
    }
    // A rerun does nothing; --force runs again.
    let again = c.run(&[
        "fleet",
        "run",
        p(&spec),
        "--index",
        "3",
        "--results",
        &results,
    ]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        stderr(&again).contains("finished already"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        c.kv.disk_access(&snaps[3]).0,
        1,
        "a finished item was granted again"
    );

    // A throttled grant past the retries is retryable (exit 6), not final:
    // the next run of the item does it.
    c.kv.fail_next_arm(429, Some(0), 4);
    let item4 = [
        "fleet",
        "run",
        p(&spec),
        "--index",
        "4",
        "--results",
        &results,
    ];
    let t = c.run(&[&item4[..], &["--force"]].concat());
    assert_eq!(t.status.code(), Some(6), "{}", stderr(&t));
    assert!(stderr(&t).contains("429"), "{}", stderr(&t));
    let again = c.run(&item4);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(!stderr(&again).contains("finished already"));
    assert_eq!(c.kv.disk_access(&snaps[4]), (2, 2, false));

    // The control: the same twelve without their family (a spec written
    // by hand that forgot it) meet Azure's limit, which the server enforces.
    let bare = c.dir.path().join("bare.jsonl");
    let text: String = std::fs::read_to_string(&spec)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("family");
                o.remove("slot");
            }
            format!("{v}\n")
        })
        .collect();
    std::fs::write(&bare, text).unwrap();
    let outs = run_all(&bare, &c.results_url("night-control"));
    let refused = outs.iter().filter(|o| o.status.code() != Some(0)).count();
    assert!(
        c.kv.grants_over_limit() > 0 && refused > 0,
        "without slots the limit should have been hit ({} refused)",
        c.kv.grants_over_limit()
    );
}

/// Runs the array on Slurm and checks every outcome by name.
#[test]
fn slurm_array_verifies_a_fleet_and_the_report_names_every_outcome() {
    const T: &str = "slurm_array_verifies_a_fleet_and_the_report_names_every_outcome";
    if !flr_testdata::have_tool("debugfs") {
        return skip(T, "no debugfs (e2fsprogs) to find the block to corrupt");
    }
    let Some(c) = Cloud::new("flr-fleet-slurm") else {
        return skip(T, "Azurite is not installed (npm install -g azurite)");
    };
    let root = flr_testdata::repo_root();
    let up = Command::new(root.join("scripts/slurm-up")).output();
    let conf = match &up {
        Ok(o) if o.status.success() => stdout(o)
            .lines()
            .find_map(|l| l.strip_prefix("SLURM_CONF="))
            .map(PathBuf::from),
        _ => None,
    };
    let Some(conf) = conf else {
        let why = match &up {
            Ok(o) => stderr(o).trim().to_string(),
            Err(e) => e.to_string(),
        };
        return skip(T, &format!("no Slurm cluster: {why}"));
    };
    let dir = c.dir.path();
    let items = std::cell::RefCell::new(Vec::<serde_json::Value>::new());
    let add = |id: &str, image: &str, extra: serde_json::Value| {
        let mut v = serde_json::json!({"id": id, "image": image});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        items.borrow_mut().push(v);
    };
    let manifest = |img: &Path, name: &str| -> String {
        let out = c.run(&["manifest", p(img)]);
        assert!(out.status.success(), "{}", stderr(&out));
        let m = dir.join(format!("{name}.manifest.json"));
        std::fs::write(&m, &out.stdout).unwrap();
        p(&m).to_string()
    };
    // Local images (a shared folder in a real cluster).
    let demo = flr_testdata::testdata_dir().join("demo.vhd");
    let ext4 = fixture("ext4/ext4.img.zst");
    let demo_m = manifest(&demo, "demo");
    let ext4_m = manifest(&ext4, "ext4");
    add(
        "demo-vhd",
        p(&demo),
        serde_json::json!({"vm": "files01", "disk": "os", "manifest": demo_m}),
    );
    for (id, f) in [
        ("demo-vhdx", "disks/demo.vhdx.zst"),
        ("ext2", "ext4/ext2.img.zst"),
        ("ext3", "ext4/ext3.img.zst"),
        ("raw", "container/raw.img.zst"),
        ("fat12", "fat/fat12.img.zst"),
        ("fat16", "fat/fat16.img.zst"),
        ("vhd-dynamic", "container/vhd-dynamic.vhd.zst"),
        ("vhdx-dynamic", "container/vhdx-dynamic.vhdx.zst"),
        ("mbr", "disks/mbr.img.zst"),
        ("vhd-fixed", "container/vhd-fixed.vhd.zst"),
    ] {
        add(
            id,
            p(&fixture(f)),
            serde_json::json!({"vm": format!("vm-{id}"), "disk": "os"}),
        );
    }
    add(
        "ext4",
        p(&ext4),
        serde_json::json!({"vm": "db01", "disk": "data", "manifest": ext4_m}),
    );
    // Blobs by SAS URL.
    let demo_sas = c.upload("demo.vhdx", &fixture("disks/demo.vhdx.zst"));
    add(
        "blob-demo",
        &demo_sas,
        serde_json::json!({"vm": "web01", "disk": "os"}),
    );
    add(
        "blob-demo-sample",
        &demo_sas,
        serde_json::json!({"vm": "web01", "disk": "os-sample", "mode": "sample", "sample": 2, "seed": 7}),
    );
    let bad = crate::verify::corrupted_copy(
        &ext4,
        crate::verify::ext4_data_offset(&ext4, "/medium.txt") + 100,
    );
    let bad_sas = c.upload("ext4-corrupt.img", bad.path());
    add(
        "blob-corrupt",
        &bad_sas,
        serde_json::json!({"vm": "db02", "disk": "data", "manifest": ext4_m}),
    );
    // Snapshots by resource id: plain, ADE, ADE with its KEK disabled, and
    // the one whose task is killed.
    let fam = disk_id("rg-fleet", "app01-os");
    for i in 0..2 {
        let id = snapshot_id("rg-fleet", &format!("app01-os-{i}"));
        c.kv.add_disk_resource(
            &id,
            snapshot_props(&fam, "2026-11-27T01:00:00Z", serde_json::json!({}), None),
            &demo_sas,
        );
        add(
            &format!("snap-plain-{i}"),
            &id,
            serde_json::json!({"vm": "app01", "disk": format!("os-{i}"), "family": fam.to_ascii_lowercase(), "slot": i}),
        );
    }
    let ade_blob = c.upload("ade-data.img", &fixture("luks/ade-data.img.zst"));
    let (ade_ok, _) = c.ade_settings("kek-ok");
    let (ade_off, kid_off) = c.ade_settings("kek-off");
    c.kv.set_key_attributes(&kid_off, Some(false), None, None);
    let mut ade_ids = Vec::new();
    for (item, vm, settings) in [
        ("ade-ok", "sql01", ade_ok),
        ("ade-kek-disabled", "sql02", ade_off),
    ] {
        let id = snapshot_id("rg-fleet", &format!("{vm}-data-ade"));
        c.kv.add_disk_resource(
            &id,
            snapshot_props(
                &disk_id("rg-fleet", &format!("{vm}-data")),
                "2026-11-27T02:00:00Z",
                serde_json::json!({}),
                Some(settings),
            ),
            &ade_blob,
        );
        add(item, &id, serde_json::json!({"vm": vm, "disk": "data"}));
        ade_ids.push(id);
    }
    let killed_id = snapshot_id("rg-fleet", "app01-os-killed");
    c.kv.add_disk_resource(
        &killed_id,
        snapshot_props(&fam, "2026-11-27T03:00:00Z", serde_json::json!({}), None),
        &demo_sas,
    );
    c.kv.delay_next_grant(&killed_id, Duration::from_secs(120));
    add(
        "killed",
        &killed_id,
        serde_json::json!({"vm": "app01", "disk": "os-killed", "family": fam.to_ascii_lowercase(), "slot": 2}),
    );
    let ran = items.borrow().len();
    assert!(ran >= 20, "{ran} items");
    // An item past the array: never reported.
    add(
        "never-run",
        p(&demo),
        serde_json::json!({"vm": "lost01", "disk": "os"}),
    );
    let items = items.into_inner();
    let spec = dir.join("spec.jsonl");
    let mut text = String::from("{\"flr_fleet_spec\":1,\"source\":\"tests/fleet.rs\"}\n");
    for i in &items {
        text.push_str(&format!("{i}\n"));
    }
    std::fs::write(&spec, text).unwrap();
    let results = dir.join("results");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();

    let slurm = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .env("SLURM_CONF", &conf)
            .output()
            .unwrap()
    };
    let t0 = Instant::now();
    let mut sb = Command::new("sbatch");
    sb.args([
        "--parsable",
        &format!("--array=0-{}%2", ran - 1),
        "-o",
        &format!("{}/%A_%a.out", logs.display()),
        p(&root.join("deploy/slurm/flr-fleet.sbatch")),
        p(&spec),
        p(&results),
    ])
    .env("SLURM_CONF", &conf)
    .env("FLR", env!("CARGO_BIN_EXE_flr"))
    .envs(c.envs());
    let sub = sb.output().unwrap();
    assert!(sub.status.success(), "sbatch: {}", stderr(&sub));
    let job = stdout(&sub).trim().split(';').next().unwrap().to_string();
    let killed_index = ran - 1;
    // The killed item's grant is under way: requeue it (Slurm kills the
    // running task and runs it again).
    let deadline = Instant::now() + Duration::from_secs(240);
    while c.kv.disk_access(&killed_id).0 == 0 {
        assert!(Instant::now() < deadline, "the killed item never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let rq = slurm(&["scontrol", "requeue", &format!("{job}_{killed_index}")]);
    assert!(rq.status.success(), "requeue: {}", stderr(&rq));
    // A requeued job waits two minutes before it is eligible again; the
    // test does not: once it is pending again, it may start now.
    let task = format!("{job}_{killed_index}");
    while Instant::now() < deadline {
        let q = slurm(&["squeue", "-h", "-j", &task, "-o", "%T %r"]);
        let state = stdout(&q);
        if state.starts_with("PENDING") {
            if state.contains("BeginTime") {
                slurm(&[
                    "scontrol",
                    "update",
                    &format!("jobid={task}"),
                    "StartTime=now",
                ]);
            }
            break;
        }
        if state.trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Wait for the array to finish.
    loop {
        let q = slurm(&["squeue", "-h", "-j", &job]);
        if stdout(&q).trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the array did not finish: {}",
            stdout(&q)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let wall = t0.elapsed().as_secs_f64();
    let res = |id: &str| json_file(&results.join(format!("results/{id}.json")));
    let killed = res("killed");
    assert_eq!(killed["outcome"], "passed", "{killed}");
    assert_eq!(killed["attempt"], 2, "{killed}");
    assert!(killed["task"]
        .as_str()
        .unwrap()
        .starts_with(&format!("slurm {job}_")));
    let (granted, revoked, active) = c.kv.disk_access(&killed_id);
    assert!(
        granted == 2 && revoked >= 1 && !active,
        "{granted} {revoked} {active}"
    );
    for id in &ade_ids {
        assert!(!c.kv.disk_access(id).2, "{id} still exported");
    }

    // The report.
    let rep = dir.join("report");
    let out = c.run(&[
        "fleet",
        "report",
        p(&results),
        "--spec",
        p(&spec),
        "-o",
        p(&rep),
        "--title",
        "Nightly",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let sum = json_file(&rep.join("summary.json"));
    let outcome_of = |id: &str| {
        sum["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in the report"))
            .clone()
    };
    for (id, want) in [
        ("demo-vhd", "passed"),
        ("blob-demo", "passed"),
        ("blob-demo-sample", "passed"),
        ("snap-plain-0", "passed"),
        ("ade-ok", "passed"),
        ("killed", "passed"),
        ("ade-kek-disabled", "blocked"),
        ("blob-corrupt", "mismatch"),
        ("never-run", "never-reported"),
    ] {
        assert_eq!(outcome_of(id)["outcome"], want, "{id}: {}", outcome_of(id));
    }
    let kek_version = kid_off.rsplit('/').next().unwrap();
    let blocked = outcome_of("ade-kek-disabled");
    assert!(
        blocked["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("kek-disabled (KEK {kid_off}")),
        "{blocked}"
    );
    assert!(
        text.contains("blocked sql02 / data: kek-disabled"),
        "{text}"
    );
    assert!(text.contains(kek_version), "{text}");
    assert!(
        outcome_of("blob-corrupt")["reasons"][0]
            .as_str()
            .unwrap()
            .contains("1 changed"),
        "{}",
        outcome_of("blob-corrupt")
    );
    assert_eq!(sum["outcomes"]["passed"], ran as u64 - 2, "{sum}");
    assert_eq!(sum["never_reported"], serde_json::json!(["never-run"]));
    let junit = std::fs::read_to_string(rep.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testsuite ").count(), items.len());
    let prom = std::fs::read_to_string(rep.join("metrics.prom")).unwrap();
    assert!(
        prom.contains("flr_fleet_items{outcome=\"blocked\"} 1"),
        "{prom}"
    );
    assert!(
        prom.contains("flr_fleet_item_exit_code{id=\"blob-corrupt\",vm=\"db02\",disk=\"data\"} 7")
    );
    let html = std::fs::read_to_string(rep.join("report.html")).unwrap();
    assert!(!html.contains("sig="), "a SAS in the page");
    let verify_s: f64 = sum["verify_seconds"].as_f64().unwrap();
    eprintln!(
        "fleet: Slurm array of {ran} items (2 task slots) in {wall:.1} s = {:.1} items/min; verify {verify_s:.1} s, overhead {:.2} s in all",
        ran as f64 * 60.0 / wall,
        sum["overhead_seconds"].as_f64().unwrap()
    );
    chromium_opens(&rep.join("report.html"), T);
}

/// The page opens in headless Chromium with no console message and its
/// script run; the screenshot is kept in target/fleet-report.png.
fn chromium_opens(html: &Path, test: &str) {
    let Some(bin) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| flr_testdata::have_tool(b))
    else {
        return skip(
            test,
            "no Chromium for the HTML check (apt-get install chromium)",
        );
    };
    let profile = tempfile::tempdir().unwrap();
    let shot = flr_testdata::repo_root().join("target/fleet-report.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("file://{}", html.display());
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let run = |extra: &[&str]| {
        let dir = tempfile::tempdir_in(profile.path()).unwrap();
        Command::new(bin)
            .args(base)
            .arg(format!("--user-data-dir={}", dir.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let s = run(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,1800",
    ]);
    assert!(s.status.success(), "chromium: {}", stderr(&s));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let d = run(&["--dump-dom", "--virtual-time-budget=2000"]);
    let dom = stdout(&d);
    assert!(
        dom.contains("data-rendered=\"ok\""),
        "the page's script did not run: {}",
        stderr(&d)
    );
    assert!(!dom.contains("data-errors=\""), "script errors: {dom}");
    for out in [&s, &d] {
        let text = stderr(out);
        let console: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(":CONSOLE(") || l.contains("Uncaught"))
            .map(str::trim)
            .collect();
        assert!(console.is_empty(), "console messages: {console:?}");
    }
    eprintln!("fleet: report.html screenshot in {}", shot.display());
}

/// 10,000 synthetic results: the report takes under 10 s and its memory
/// stays small (peak RSS, GNU time).
#[test]
fn report_of_ten_thousand_results_is_quick_and_small() {
    let dir = tempfile::tempdir().unwrap();
    let n = 10_000u64;
    let res = dir.path().join("res/results");
    std::fs::create_dir_all(&res).unwrap();
    let mut spec = String::from("{\"flr_fleet_spec\":1}\n");
    for i in 0..n {
        let id = format!("snap-{i:05}");
        spec.push_str(&format!(
            "{{\"id\":\"{id}\",\"image\":\"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/snapshots/{id}\",\"vm\":\"vm-{}\",\"disk\":\"d{}\"}}\n",
            i / 4,
            i % 4
        ));
        if i % 1000 == 999 {
            continue; // never reported
        }
        let code = match i % 97 {
            0 => 4,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        let r = synthetic(i, &id, code);
        std::fs::write(res.join(format!("{id}.json")), r.to_json()).unwrap();
    }
    let spec_path = dir.path().join("spec.jsonl");
    std::fs::write(&spec_path, spec).unwrap();
    let rep = dir.path().join("rep");
    let time = Path::new("/usr/bin/time");
    let mut cmd = if time.exists() {
        let mut c = Command::new(time);
        c.args(["-f", "%M %e"]).arg(env!("CARGO_BIN_EXE_flr"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_flr"))
    };
    let t = Instant::now();
    let out = cmd
        .args([
            "fleet",
            "report",
            p(&dir.path().join("res")),
            "--spec",
            p(&spec_path),
            "-o",
            p(&rep),
        ])
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(secs < 10.0, "fleet report of {n} results took {secs:.1} s");
    let sum = json_file(&rep.join("summary.json"));
    assert_eq!(sum["items_expected"], n);
    assert_eq!(sum["never_reported"].as_array().unwrap().len(), 10);
    let rss = stderr(&out)
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|k| k.parse::<u64>().ok());
    if let Some(kib) = rss {
        assert!(kib < 64 * 1024, "peak RSS {kib} KiB");
    }
    let html = std::fs::metadata(rep.join("report.html")).unwrap().len();
    eprintln!(
        "fleet: report of {n} results in {secs:.2} s, peak RSS {} MiB, report.html {} KiB",
        rss.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        html / 1024
    );
}

fn synthetic(i: u64, id: &str, code: i32) -> flr_fleet::ItemResult {
    use flr_fleet::{ItemResult, KeyChainStep, Outcome, VolumeSummary, RESULT_VERSION};
    let blocked = code == 4;
    ItemResult {
        flr_fleet_result: RESULT_VERSION,
        index: i,
        id: id.into(),
        vm: Some(format!("vm-{}", i / 4)),
        disk: Some(format!("d{}", i % 4)),
        image: format!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/snapshots/{id}"
        ),
        attempt: 1,
        started: "2026-11-28T01:00:00Z".into(),
        finished: "2026-11-28T01:02:00Z".into(),
        seconds: 60.0 + (i % 60) as f64,
        verify_seconds: 59.0 + (i % 60) as f64,
        exit_code: code,
        outcome: Outcome::of_exit_code(code),
        status: "ok".into(),
        mode: "full".into(),
        bytes_read: (i % 100 + 1) << 24,
        files_read: 1000 + i % 500,
        volumes: (1..=3)
            .map(|v| VolumeSummary {
                id: format!("p{v}"),
                fs_type: Some("ext4".into()),
                state: if blocked && v == 2 {
                    "blocked"
                } else {
                    "opened"
                }
                .into(),
                verdict: "readable".into(),
                good: code == 0 || v != 2,
                reasons: if blocked && v == 2 {
                    vec!["kek-disabled".into()]
                } else {
                    vec!["plain".into()]
                },
                files: 400,
                files_read: 400,
                bytes_read: 1 << 22,
                changed: u64::from(code == 7 && v == 2),
                ..VolumeSummary::default()
            })
            .collect(),
        key_chain: if blocked {
            vec![KeyChainStep {
                secret: "https://kv.vault.azure.net/secrets/bek/0123".into(),
                kek: Some("https://kv.vault.azure.net/keys/kek/4567".into()),
                outcome: "blocked".into(),
                code: Some("kek-disabled".into()),
                message: Some("the KEK version is disabled".into()),
            }]
        } else {
            Vec::new()
        },
        ..ItemResult::default()
    }
}

/// A finished item is not run again; the index comes from the engine's
/// variables; a missing index is a usage error.
#[test]
fn reruns_and_engine_indices() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.jsonl");
    let demo = flr_testdata::testdata_dir().join("demo.vhd");
    std::fs::write(
        &spec,
        format!(
            "{{\"flr_fleet_spec\":1}}\n{{\"id\":\"a\",\"image\":\"{0}\"}}\n{{\"id\":\"b\",\"image\":\"{0}\",\"mode\":\"sample\",\"sample\":1}}\n{{\"id\":\"c\",\"image\":\"/no/such.vhd\"}}\n",
            demo.display()
        ),
    )
    .unwrap();
    let results = dir.path().join("r");
    let run = |vars: &[(&str, &str)], extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flr"));
        c.args(["fleet", "run", p(&spec), "--results", p(&results)])
            .args(extra)
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("AZ_BATCH_TASK_ID")
            .envs(vars.iter().copied());
        c.output().unwrap()
    };
    let out = run(&[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("JOB_COMPLETION_INDEX"),
        "{}",
        stderr(&out)
    );
    let out = run(&[("JOB_COMPLETION_INDEX", "0")], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(
        &[("AZ_BATCH_TASK_ID", "flr-1"), ("AZ_BATCH_JOB_ID", "night")],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let b = json_file(&results.join("results/b.json"));
    assert_eq!(b["task"], "batch night/flr-1");
    assert_eq!(b["mode"], "sample");
    let out = run(&[("SLURM_ARRAY_TASK_ID", "2")], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let c = json_file(&results.join("results/c.json"));
    assert_eq!(c["outcome"], "error");
    assert!(c["error"].as_str().unwrap().contains("/no/such.vhd"), "{c}");
    let a = json_file(&results.join("results/a.json"));
    let out = run(&[], &["--index", "0"]);
    assert!(
        stderr(&out).contains("finished already"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json_file(&results.join("results/a.json")), a);
    let out = run(&[], &["--index", "0", "--force"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_file(&results.join("results/a.json"))["attempt"], 2);
    let out = run(&[], &["--index", "9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no item 9: the spec has 3 item(s)"),
        "{}",
        stderr(&out)
    );
}

/// The deploy files load in the tools their platforms use.
#[test]
fn deploy_files_validate() {
    let root = flr_testdata::repo_root().join("deploy");
    let sh = Command::new("bash")
        .args(["-n", p(&root.join("slurm/flr-fleet.sbatch"))])
        .output()
        .unwrap();
    assert!(sh.status.success(), "{}", stderr(&sh));
    let python = std::env::var("FLR_FLEET_PYTHON").unwrap_or_else(|_| "python3".into());
    let has = |module: &str| {
        Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let k8s = root.join("kubernetes/flr-fleet-job.yaml");
    let batch_check = root.join("azure-batch/check.py");
    let batch = root.join("azure-batch");
    let checks: [(&str, &str, Vec<&str>); 2] = [
        (
            "kubernetes_validate",
            "kubernetes-validate",
            vec![
                "-m",
                "kubernetes_validate",
                "--kubernetes-version",
                "1.33",
                "--strict",
                p(&k8s),
            ],
        ),
        (
            "azure.batch",
            "azure-batch",
            vec![p(&batch_check), p(&batch)],
        ),
    ];
    for (module, package, args) in checks {
        if !has(module) {
            skip(
                &format!("deploy_files_validate ({package})"),
                &format!("no {package} (pip install {package})"),
            );
            continue;
        }
        let out = Command::new(&python).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{package}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

/// path → sha256 of every file in a manifest document.
fn manifest_hashes(doc: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for vol in doc["volumes"].as_array().unwrap() {
        for e in vol["entries"].as_array().unwrap() {
            if let Some(h) = e["sha256"].as_str() {
                out.insert(e["path"].as_str().unwrap().to_string(), h.to_string());
            }
        }
    }
    out
}

/// Two nights of one disk through the local runner: the first night's item
/// writes its manifest (`write_manifest`), the second's names it (`since`,
/// `base`): it reads only the files whose blocks changed, carries the rest,
/// and writes a manifest whose every hash is the one a full read of the
/// second night's image gives.
#[test]
fn fleet_item_since_reads_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    for fs in ["ext4", "btrfs"] {
        let old = flr_testdata::fixture(&format!("diff/{fs}-old.vhd.zst"));
        let new = flr_testdata::fixture(&format!("diff/{fs}-new.vhd.zst"));
        let n1 = dir.path().join(format!("{fs}-night1.json"));
        let n2 = dir.path().join(format!("{fs}-night2.json"));
        let spec = dir.path().join(format!("{fs}-spec.jsonl"));
        let item = |v: serde_json::Value| serde_json::to_string(&v).unwrap();
        std::fs::write(
            &spec,
            format!(
                "{{\"flr_fleet_spec\":1}}\n{}\n{}\n",
                item(serde_json::json!({"id": "night1", "image": old, "write_manifest": n1})),
                item(serde_json::json!({
                    "id": "night2", "image": new, "since": n1, "base": old, "write_manifest": n2
                })),
            ),
        )
        .unwrap();
        let results = dir.path().join(format!("{fs}-results"));
        for i in ["0", "1"] {
            let out = Command::new(env!("CARGO_BIN_EXE_flr"))
                .args([
                    "fleet",
                    "run",
                    p(&spec),
                    "--results",
                    p(&results),
                    "--index",
                    i,
                ])
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{fs} item {i}: {}",
                stderr(&out)
            );
        }
        let r1 = json_file(&results.join("results/night1.json"));
        let r2 = json_file(&results.join("results/night2.json"));
        let (read1, read2) = (
            r1["files_read"].as_u64().unwrap(),
            r2["files_read"].as_u64().unwrap(),
        );
        assert!(read1 >= 20, "{fs}: night 1 read {read1} files");
        assert!(
            read2 * 2 < read1,
            "{fs}: night 2 read {read2} of {read1} files"
        );
        let full = Command::new(env!("CARGO_BIN_EXE_flr"))
            .args(["manifest", p(&new)])
            .output()
            .unwrap();
        assert!(full.status.success(), "{fs}: {}", stderr(&full));
        let full: serde_json::Value = serde_json::from_slice(&full.stdout).unwrap();
        let next = json_file(&n2);
        assert_eq!(
            manifest_hashes(&next),
            manifest_hashes(&full),
            "{fs}: the carried and read hashes against a full read"
        );
        assert!(
            std::fs::read_to_string(&n2)
                .unwrap()
                .contains("\"carried\""),
            "{fs}: carried entries are marked"
        );
    }
}
