//! The Nomad job, checked two ways:
//! - its structure, parsed with a real HCL parser (hcl-rs);
//! - an allocation lifecycle that runs the `restore` and `replicate` tasks' commands exactly
//!   as the job writes them (Nomad's directories mapped to a temporary allocation, the
//!   templates rendered by the test) against a local S3 server, with a stand-in application.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hcl::{Block, Body, Expression};

use crate::support::cli::{output_within, text};
use crate::support::oracle::{Litestream, Target, write_config};
use crate::support::replicator::{content_hash, finish_load, load, wait_timeout};
use crate::support::s3::{S3Server, TestBucket, own_garage_in};
use crate::support::sqlite::integrity_check;

pub(crate) fn job_text() -> String {
    std::fs::read_to_string(crate::support::repo_root().join("nomad/overseerr.nomad.hcl")).unwrap()
}

pub(crate) fn parse(text: &str) -> Body {
    hcl::parse(text).unwrap_or_else(|e| panic!("a Nomad file does not parse: {e}"))
}

pub(crate) fn block<'a>(b: &'a Body, ident: &str, label: Option<&str>) -> &'a Block {
    b.blocks()
        .find(|bl| {
            bl.identifier() == ident
                && label.is_none_or(|l| bl.labels().first().map(|x| x.as_str()) == Some(l))
        })
        .unwrap_or_else(|| panic!("no block {ident} {label:?}"))
}

pub(crate) fn blocks<'a>(b: &'a Body, ident: &str) -> Vec<&'a Block> {
    b.blocks().filter(|bl| bl.identifier() == ident).collect()
}

pub(crate) fn attr<'a>(b: &'a Body, key: &str) -> &'a Expression {
    b.attributes()
        .find(|a| a.key() == key)
        .map(|a| a.expr())
        .unwrap_or_else(|| panic!("no attribute {key}"))
}

/// A string-ish expression as text (heredocs dedented as `<<-` does); others as HCL.
pub(crate) fn text_of(e: &Expression) -> String {
    match e {
        Expression::String(s) => s.clone(),
        Expression::TemplateExpr(t) => match t.as_ref() {
            hcl::TemplateExpr::QuotedString(s) => s.clone(),
            hcl::TemplateExpr::Heredoc(h) => dedent(&h.template),
        },
        other => other.to_string(),
    }
}

fn dedent(s: &str) -> String {
    let indent = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    s.lines()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn strings(e: &Expression) -> Vec<String> {
    match e {
        Expression::Array(v) => v.iter().map(text_of).collect(),
        other => panic!("expected a list, got {other}"),
    }
}

pub(crate) fn task<'a>(group: &'a Body, name: &str) -> &'a Body {
    block(group, "task", Some(name)).body()
}

#[test]
fn job_structure() {
    let body = parse(&job_text());
    for v in ["liteship_image", "minio_service"] {
        block(&body, "variable", Some(v));
    }
    let job = block(&body, "job", Some("overseerr")).body();
    assert_eq!(strings(attr(job, "datacenters")), vec!["dc1"]);
    assert_eq!(text_of(attr(job, "namespace")), "default");
    let group = block(job, "group", Some("overseerr")).body();
    let net = block(group, "network", None).body();
    assert_eq!(text_of(attr(net, "mode")), "bridge");
    assert_eq!(
        attr(block(net, "port", Some("http")).body(), "to").to_string(),
        "5055"
    );
    let disk = block(group, "ephemeral_disk", None).body();
    assert_eq!(attr(disk, "size").to_string(), "100");
    assert_eq!(attr(disk, "sticky").to_string(), "true");
    assert_eq!(attr(disk, "migrate").to_string(), "true");
    let vol = block(group, "volume", Some("config")).body();
    assert_eq!(text_of(attr(vol, "type")), "csi");
    assert_eq!(text_of(attr(vol, "source")), "glusterfs_overseerr_config");
    assert_eq!(text_of(attr(vol, "access_mode")), "single-node-writer");
    assert_eq!(text_of(attr(vol, "attachment_mode")), "file-system");

    // Tasks: both Litestream tasks are liteship now.
    let names: Vec<String> = blocks(group, "task")
        .iter()
        .map(|t| t.labels()[0].as_str().to_string())
        .collect();
    assert_eq!(names, vec!["restore", "overseerr", "replicate"]);
    let restore = task(group, "restore");
    let lc = block(restore, "lifecycle", None).body();
    assert_eq!(
        (text_of(attr(lc, "hook")), attr(lc, "sidecar").to_string()),
        ("prestart".into(), "false".into())
    );
    let cfg = block(restore, "config", None).body();
    assert_eq!(attr(cfg, "image").to_string(), "var.liteship_image");
    let args = strings(attr(cfg, "args"));
    for want in [
        "restore",
        "-if-db-not-exists",
        "-if-replica-exists",
        "-config",
    ] {
        assert!(
            args.contains(&want.to_string()),
            "restore args {args:?} lack {want}"
        );
    }
    assert!(args.last().unwrap().ends_with("/data/db/db.sqlite3"));

    let app = task(group, "overseerr");
    let cfg = block(app, "config", None).body();
    assert_eq!(text_of(attr(cfg, "image")), "sctx/overseerr:latest");
    assert_eq!(strings(attr(cfg, "ports")), vec!["http"]);
    let mount = block(cfg, "mount", None).body();
    assert_eq!(
        (text_of(attr(mount, "type")), text_of(attr(mount, "target"))),
        ("bind".into(), "/app/config/db".into())
    );
    assert!(text_of(attr(mount, "source")).ends_with("alloc/data/db"));
    let vm = block(app, "volume_mount", None).body();
    assert_eq!(
        (
            text_of(attr(vm, "volume")),
            text_of(attr(vm, "destination"))
        ),
        ("config".into(), "/config".into())
    );

    let rep = task(group, "replicate");
    let lc = block(rep, "lifecycle", None).body();
    assert_eq!(
        (text_of(attr(lc, "hook")), attr(lc, "sidecar").to_string()),
        ("poststart".into(), "true".into())
    );
    let kill = liteship::config::parse_go_duration(&text_of(attr(rep, "kill_timeout"))).unwrap();
    assert!(
        kill > Duration::from_secs(30),
        "kill_timeout {kill:?} must exceed the 30 s shutdown sync"
    );
    let cfg = block(rep, "config", None).body();
    assert_eq!(attr(cfg, "image").to_string(), "var.liteship_image");
    assert_eq!(strings(attr(cfg, "args"))[0], "replicate");

    // Templates: the secret's keys, fail on a missing key, the same bucket and path.
    for t in [restore, rep] {
        let tpl = block(t, "template", None).body();
        assert_eq!(attr(tpl, "error_on_missing_key").to_string(), "true");
        let data = text_of(attr(tpl, "data"));
        for want in [
            "secret \"nomad/data/default/overseerr\"",
            "MINIO_ACCESS_KEY",
            "MINIO_SECRET_KEY",
            "bucket: overseerr-litestream",
            "path: db",
            "service \"${var.minio_service}\"",
        ] {
            assert!(data.contains(want), "template lacks {want}: {data}");
        }
    }

    // Services: the app with Connect and Traefik, the replicator's /readyz check.
    let services = blocks(group, "service");
    let app_svc = services
        .iter()
        .find(|s| text_of(attr(s.body(), "name")) == "overseerr")
        .expect("service overseerr")
        .body();
    assert_eq!(text_of(attr(app_svc, "port")), "5055");
    let proxy = block(
        block(
            block(app_svc, "connect", None).body(),
            "sidecar_service",
            None,
        )
        .body(),
        "proxy",
        None,
    )
    .body();
    block(proxy, "transparent_proxy", None);
    let check = block(app_svc, "check", None).body();
    assert_eq!(
        (text_of(attr(check, "type")), text_of(attr(check, "path"))),
        ("http".into(), "/api/v1/status".into())
    );
    assert_eq!(text_of(attr(check, "timeout")), "30s");
    let tags = strings(attr(app_svc, "tags"));
    for want in [
        "Host(`overseerr.brmartin.co.uk`)",
        "entrypoints=websecure",
        "traefik.consulcatalog.connect=true",
    ] {
        assert!(
            tags.iter().any(|t| t.contains(want)),
            "tags {tags:?} lack {want}"
        );
    }
    let ready = services
        .iter()
        .flat_map(|s| blocks(s.body(), "check"))
        .any(|c| text_of(attr(c.body(), "path")) == "/readyz");
    assert!(ready, "no Nomad check on the replicator's /readyz");

    // The CSI volume spec and the Vault policy.
    let vol = parse(
        &std::fs::read_to_string(
            crate::support::repo_root().join("nomad/overseerr-config.volume.hcl"),
        )
        .unwrap(),
    );
    assert_eq!(text_of(attr(&vol, "plugin_id")), "glusterfs");
    assert_eq!(
        (
            text_of(attr(&vol, "capacity_min")),
            text_of(attr(&vol, "capacity_max"))
        ),
        ("100MiB".into(), "1GiB".into())
    );
    assert_eq!(
        attr(block(&vol, "lifecycle", None).body(), "prevent_destroy").to_string(),
        "true"
    );
    let pol = parse(
        &std::fs::read_to_string(
            crate::support::repo_root().join("nomad/overseerr.vault-policy.hcl"),
        )
        .unwrap(),
    );
    let path = block(&pol, "path", Some("nomad/data/default/overseerr")).body();
    assert_eq!(strings(attr(path, "capabilities")), vec!["read"]);
}

/// One allocation's directories, as the docker driver exposes them inside the tasks.
struct Alloc {
    root: PathBuf,
}

impl Alloc {
    fn new(parent: &Path, name: &str) -> Alloc {
        let root = parent.join(name);
        for d in ["alloc/data/db", "restore/secrets", "replicate/secrets"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Alloc { root }
    }

    fn alloc_dir(&self) -> PathBuf {
        self.root.join("alloc")
    }

    fn db(&self) -> PathBuf {
        self.alloc_dir().join("data/db/db.sqlite3")
    }

    /// Renders a task's template as Nomad would with `endpoint` for MinIO and the secret.
    fn render(&self, task: &str, template: &str, endpoint: &str, srv: &S3Server) -> PathBuf {
        let mut t = template.replace(
            "{{ env \"NOMAD_ALLOC_DIR\" }}",
            self.alloc_dir().to_str().unwrap(),
        );
        let svc_start = t
            .find("{{ with service")
            .expect("service lookup in template");
        let svc_end = t[svc_start..]
            .find("{{ end }}\n")
            .map(|i| svc_start + i + "{{ end }}".len())
            .unwrap();
        t.replace_range(svc_start..svc_end, endpoint);
        t = t
            .replace("{{ with secret \"nomad/data/default/overseerr\" }}", "")
            .replace("{{ .Data.data.MINIO_ACCESS_KEY }}", &srv.access_key_id)
            .replace("{{ .Data.data.MINIO_SECRET_KEY }}", &srv.secret_access_key)
            .replace("{{ end }}", "");
        assert!(!t.contains("{{"), "template not fully rendered: {t}");
        let out = self.root.join(task).join("secrets/litestream.yml");
        std::fs::write(&out, t).unwrap();
        out
    }

    /// A task's args with Nomad's variables substituted.
    fn args(&self, task: &str, args: &[String]) -> Vec<String> {
        let secrets = self.root.join(task).join("secrets");
        args.iter()
            .map(|a| {
                a.replace("${NOMAD_SECRETS_DIR}", secrets.to_str().unwrap())
                    .replace("${NOMAD_ALLOC_DIR}", self.alloc_dir().to_str().unwrap())
            })
            .collect()
    }
}

struct Job {
    restore_args: Vec<String>,
    restore_tpl: String,
    replicate_args: Vec<String>,
    replicate_tpl: String,
}

fn job() -> Job {
    let body = parse(&job_text());
    let group = block(
        block(&body, "job", Some("overseerr")).body(),
        "group",
        Some("overseerr"),
    )
    .body();
    let get = |name: &str| {
        let t = task(group, name);
        let args = strings(attr(block(t, "config", None).body(), "args"));
        let tpl = text_of(attr(block(t, "template", None).body(), "data"))
            .replace("${var.minio_service}", "minio");
        (args, tpl)
    };
    let (restore_args, restore_tpl) = get("restore");
    let (replicate_args, replicate_tpl) = get("replicate");
    Job {
        restore_args,
        restore_tpl,
        replicate_args,
        replicate_tpl,
    }
}

/// Runs the restore task; returns (success, output).
fn run_restore(j: &Job, a: &Alloc, endpoint: &str, srv: &S3Server) -> std::process::Output {
    a.render("restore", &j.restore_tpl, endpoint, srv);
    let args = a.args("restore", &j.restore_args);
    output_within(
        crate::support::cli::liteship().args(&args),
        Duration::from_secs(120),
    )
}

/// Starts the replicate sidecar (its `-addr :9090` moved to a free loopback port).
fn start_replicate(j: &Job, a: &Alloc, endpoint: &str, srv: &S3Server) -> std::process::Child {
    a.render("replicate", &j.replicate_tpl, endpoint, srv);
    let port = crate::support::free_port();
    let args: Vec<String> = a
        .args("replicate", &j.replicate_args)
        .into_iter()
        .map(|x| {
            if x == ":9090" {
                format!("127.0.0.1:{port}")
            } else {
                x
            }
        })
        .collect();
    let log = std::fs::File::create(a.root.join("replicate.log")).unwrap();
    crate::support::cli::liteship()
        .args(&args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn stop(mut c: std::process::Child, a: &Alloc) {
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let st = wait_timeout(&mut c, Duration::from_secs(45))
        .expect("replicate stops within the kill_timeout");
    assert!(
        st.success(),
        "replicate exit {st}: {}",
        std::fs::read_to_string(a.root.join("replicate.log")).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn allocation_lifecycle() {
    let srv = own_garage_in("us-east-1");
    let garage = srv.garage.clone().unwrap();
    let _tb = TestBucket::named(&srv, "overseerr-litestream").await;
    let ep = srv.endpoint.clone();
    let j = job();
    let dir = tempfile::tempdir().unwrap();

    // 1. First boot on an empty bucket: restore is a no-op, the app creates the database.
    let a1 = Alloc::new(dir.path(), "alloc-1");
    let r = run_restore(&j, &a1, &ep, &srv);
    assert!(
        r.status.success()
            && String::from_utf8_lossy(&r.stdout).contains("no matching backups found"),
        "{}",
        text(&r)
    );
    finish_load(load(&a1.db(), &["--rate", "50", "--duration", "0.2"]));
    let rep = start_replicate(&j, &a1, &ep, &srv);
    finish_load(load(
        &a1.db(),
        &["--rate", "200", "--duration", "2", "--writer", "1"],
    ));
    stop(rep, &a1); // the allocation is stopped
    let want = content_hash(&a1.db());

    // 2. A new allocation on an empty disk restores every write.
    let a2 = Alloc::new(dir.path(), "alloc-2");
    let r = run_restore(&j, &a2, &ep, &srv);
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(
        content_hash(&a2.db()),
        want,
        "the new allocation sees every write"
    );
    assert_eq!(integrity_check(&a2.db()), "ok");
    let rep = start_replicate(&j, &a2, &ep, &srv);
    finish_load(load(
        &a2.db(),
        &["--rate", "200", "--duration", "1", "--writer", "2"],
    ));
    stop(rep, &a2);

    // 3. A restart with the sticky disk still present skips the restore.
    let before = std::fs::read(a2.db()).unwrap();
    let r = run_restore(&j, &a2, &ep, &srv);
    assert!(
        r.status.success()
            && String::from_utf8_lossy(&r.stdout).contains("database already exists, skipping"),
        "{}",
        text(&r)
    );
    assert!(std::fs::read(a2.db()).unwrap() == before);
    let rep = start_replicate(&j, &a2, &ep, &srv);
    finish_load(load(
        &a2.db(),
        &["--rate", "200", "--duration", "1", "--writer", "3"],
    ));
    stop(rep, &a2);
    let want = content_hash(&a2.db());

    // 4. MinIO down at allocation start: the restore task fails (Nomad retries it) and the
    //    app does not start; once MinIO is back the restore succeeds.
    garage.stop();
    let a3 = Alloc::new(dir.path(), "alloc-3");
    let r = run_restore(&j, &a3, &ep, &srv);
    assert!(
        !r.status.success(),
        "restore must fail while MinIO is down: {}",
        text(&r)
    );
    assert!(!a3.db().exists(), "no database appears while MinIO is down");
    garage.resume();
    let r = run_restore(&j, &a3, &ep, &srv);
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(content_hash(&a3.db()), want);

    // 5. Bad credentials fail the restore task too.
    let bad = S3Server {
        secret_access_key: "0".repeat(64),
        ..srv.clone()
    };
    let a4 = Alloc::new(dir.path(), "alloc-4");
    let r = run_restore(&j, &a4, &ep, &bad);
    assert!(
        !r.status.success() && String::from_utf8_lossy(&r.stderr).contains("access denied"),
        "{}",
        text(&r)
    );
}

/// A bucket written by Litestream 0.5.17 (the job being migrated) is picked up unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn allocation_picks_up_a_litestream_bucket() {
    let srv = own_garage_in("us-east-1");
    let tb = TestBucket::named(&srv, "overseerr-litestream").await;
    let ep = srv.endpoint.clone();
    let j = job();
    let dir = tempfile::tempdir().unwrap();
    // The old job: Litestream replicates the app's database.
    let old = dir.path().join("old.db");
    finish_load(load(&old, &["--rate", "50", "--duration", "0.2"]));
    let ls =
        Litestream::v0_5_17().replicate(&write_config(dir.path(), &old, Target::S3(&tb.config)));
    std::thread::sleep(Duration::from_millis(800));
    finish_load(load(
        &old,
        &["--rate", "200", "--duration", "2", "--writer", "1"],
    ));
    std::thread::sleep(Duration::from_millis(500));
    ls.stop();
    // The new job on a new node.
    let a = Alloc::new(dir.path(), "alloc-1");
    let r = run_restore(&j, &a, &ep, &srv);
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(content_hash(&a.db()), content_hash(&old));
    let rep = start_replicate(&j, &a, &ep, &srv);
    finish_load(load(
        &a.db(),
        &["--rate", "200", "--duration", "1", "--writer", "2"],
    ));
    stop(rep, &a);
    let b = Alloc::new(dir.path(), "alloc-2");
    assert!(run_restore(&j, &b, &ep, &srv).status.success());
    assert_eq!(
        content_hash(&b.db()),
        content_hash(&a.db()),
        "liteship continued the Litestream history"
    );
}
