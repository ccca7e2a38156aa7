//! The job variants beside the main Nomad job: the exec-driver job (no registry) must run
//! the same liteship commands with the same templates and checks as the main job (whose
//! commands `nomad_job` runs for real), and the periodic restore drill must be a daily batch
//! job that fails loudly. Also the image build script, driven with a stand-in engine.

use std::path::Path;
use std::process::Command;

use hcl::Body;

use crate::nomad_job::{attr, block, blocks, job_text, parse, strings, task, text_of};
use crate::support::repo_root;

fn read(rel: &str) -> Body {
    parse(&std::fs::read_to_string(repo_root().join(rel)).unwrap())
}

fn group(b: &Body, job: &str, group: &str) -> Body {
    let job = block(b, "job", Some(job)).body();
    block(job, "group", Some(group)).body().clone()
}

#[test]
fn exec_job_runs_the_same_tasks_as_the_main_job() {
    let main = parse(&job_text());
    let exec = read("nomad/overseerr-exec.nomad.hcl");
    for v in ["liteship_artifact", "liteship_checksum", "minio_service"] {
        block(&exec, "variable", Some(v));
    }
    let (mg, eg) = (
        group(&main, "overseerr", "overseerr"),
        group(&exec, "overseerr", "overseerr"),
    );
    let names = |g: &Body| -> Vec<String> {
        blocks(g, "task")
            .iter()
            .map(|t| t.labels()[0].as_str().to_string())
            .collect()
    };
    assert_eq!(names(&eg), names(&mg));
    // Group-level pieces (network, disk, volume, services and their checks) are identical.
    for ident in ["network", "ephemeral_disk", "volume", "service"] {
        let m: Vec<String> = blocks(&mg, ident)
            .iter()
            .map(|b| format!("{b:?}"))
            .collect();
        let e: Vec<String> = blocks(&eg, ident)
            .iter()
            .map(|b| format!("{b:?}"))
            .collect();
        assert_eq!(e, m, "group {ident} differs from the main job");
    }
    // The application task is untouched.
    assert_eq!(
        format!("{:?}", task(&eg, "overseerr")),
        format!("{:?}", task(&mg, "overseerr"))
    );
    for name in ["restore", "replicate"] {
        let (mt, et) = (task(&mg, name), task(&eg, name));
        assert_eq!(text_of(attr(et, "driver")), "exec", "{name}");
        let art = block(et, "artifact", None).body();
        assert_eq!(attr(art, "source").to_string(), "var.liteship_artifact");
        assert_eq!(text_of(attr(art, "destination")), "local/liteship");
        let opts = block(art, "options", None).body();
        assert_eq!(attr(opts, "checksum").to_string(), "var.liteship_checksum");
        let cfg = block(et, "config", None).body();
        assert_eq!(text_of(attr(cfg, "command")), "local/liteship/liteship");
        let main_cfg = block(mt, "config", None).body();
        assert_eq!(
            strings(attr(cfg, "args")),
            strings(attr(main_cfg, "args")),
            "{name}: args differ from the main job"
        );
        for ident in ["lifecycle", "template", "restart", "resources"] {
            let m: Vec<String> = blocks(mt, ident).iter().map(|b| format!("{b:?}")).collect();
            let e: Vec<String> = blocks(et, ident).iter().map(|b| format!("{b:?}")).collect();
            assert_eq!(e, m, "{name}: {ident} differs from the main job");
        }
        for key in ["kill_timeout", "kill_signal"] {
            let m = mt
                .attributes()
                .find(|a| a.key() == key)
                .map(|a| a.expr().to_string());
            let e = et
                .attributes()
                .find(|a| a.key() == key)
                .map(|a| a.expr().to_string());
            assert_eq!(e, m, "{name}: {key}");
        }
    }
}

#[test]
fn verify_job_is_a_daily_drill_that_fails_loudly() {
    let b = read("nomad/overseerr-verify.nomad.hcl");
    let job = block(&b, "job", Some("overseerr-verify")).body();
    assert_eq!(text_of(attr(job, "type")), "batch");
    let periodic = block(job, "periodic", None).body();
    assert_eq!(strings(attr(periodic, "crons")).len(), 1);
    assert_eq!(attr(periodic, "prohibit_overlap").to_string(), "true");
    let g = block(job, "group", Some("verify")).body();
    // A failed drill stays failed: no restarts or reschedules that could hide it.
    let restart = block(g, "restart", None).body();
    assert_eq!(attr(restart, "attempts").to_string(), "0");
    assert_eq!(text_of(attr(restart, "mode")), "fail");
    assert_eq!(
        attr(block(g, "reschedule", None).body(), "attempts").to_string(),
        "0"
    );
    let t = task(g, "verify");
    let args = strings(attr(block(t, "config", None).body(), "args"));
    assert_eq!(args[0], "verify");
    assert!(args.contains(&"-max-age".to_string()), "{args:?}");
    // The same replica as the replicate task of the main job.
    let main = parse(&job_text());
    let mg = group(&main, "overseerr", "overseerr");
    let main_tpl = text_of(attr(
        block(task(&mg, "replicate"), "template", None).body(),
        "data",
    ));
    let tpl = text_of(attr(block(t, "template", None).body(), "data"));
    let replica = |s: &str| s[s.find("replica:").unwrap()..].to_string();
    assert_eq!(replica(&tpl), replica(&main_tpl));
    let env = block(t, "env", None).body();
    assert_eq!(text_of(attr(env, "TMPDIR")), "${NOMAD_TASK_DIR}");
    // The drill's flags are ones `liteship verify` accepts.
    let o = Command::new(env!("CARGO_BIN_EXE_liteship"))
        .args(["verify", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for a in args.iter().filter(|a| a.starts_with('-')) {
        assert!(help.contains(a.as_str()), "verify --help has no {a}");
    }
}

/// A stand-in engine on PATH that records its arguments.
fn fake_engine(dir: &Path, name: &str) {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("#!/bin/sh\necho \"{name} $*\" >> \"$FAKE_LOG\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs the script with PATH = `dir` only (plus `dirname`, which it needs), so that an
/// engine installed on the host cannot stand in for the fake one.
fn build_image(dir: &Path, args: &[&str]) -> (std::process::Output, String) {
    let log = dir.join("engine.log");
    let _ = std::fs::remove_file(&log);
    let dirname = dir.join("dirname");
    if !dirname.exists() {
        std::os::unix::fs::symlink("/usr/bin/dirname", &dirname).unwrap();
    }
    let o = Command::new("/bin/bash")
        .arg(repo_root().join("scripts/build-image.sh"))
        .args(args)
        .env("PATH", dir)
        .env("FAKE_LOG", &log)
        .output()
        .unwrap();
    (o, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn image_script_builds_tags_and_pushes_with_the_engine_present() {
    let dir = tempfile::tempdir().unwrap();
    // Only podman present: podman is used.
    fake_engine(dir.path(), "podman");
    let (o, log) = build_image(dir.path(), &["reg.example:5000/liteship:0.1.0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        log,
        "podman build -t reg.example:5000/liteship:0.1.0 .\npodman push reg.example:5000/liteship:0.1.0\n"
    );
    // docker preferred when both exist; --no-push only builds.
    fake_engine(dir.path(), "docker");
    let (o, log) = build_image(dir.path(), &["reg.example/liteship:1", "--no-push"]);
    assert!(o.status.success());
    assert_eq!(log, "docker build -t reg.example/liteship:1 .\n");
    // No argument: the usage, exit 2.
    let (o, log) = build_image(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("usage:"));
    assert!(log.is_empty());
    // No tag: refused with the fix.
    let (o, log) = build_image(dir.path(), &["reg.example/liteship"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no tag"));
    assert!(log.is_empty());
    // No engine at all: a clear error naming the alternatives.
    let empty = tempfile::tempdir().unwrap();
    let (o, _) = build_image(empty.path(), &["reg.example/liteship:1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("neither docker nor podman") && err.contains("exec"),
        "{err}"
    );
}
