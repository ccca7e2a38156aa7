//! Process helpers shared by the head-to-head benchmarks: which binary, start, stop, and
//! the CPU time and peak RSS of a child.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::oracle::Litestream;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tool {
    Litestream,
    Liteship,
}

impl Tool {
    pub fn bin(self) -> std::path::PathBuf {
        match self {
            Tool::Litestream => Litestream::v0_5_17().bin,
            Tool::Liteship => env!("CARGO_BIN_EXE_liteship").into(),
        }
    }
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `<tool> replicate -config CFG`, output to `log`.
pub fn spawn(tool: Tool, cfg: &Path, log: &Path) -> Child {
    spawn_args(
        tool,
        &["replicate", "-config", &cfg.display().to_string()],
        log,
    )
}

/// `<tool> ARGS…`, output to `log`.
pub fn spawn_args(tool: Tool, args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(tool.bin())
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_CA_BUNDLE") // Litestream's SDK refuses it with a plain-HTTP endpoint
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// SIGTERM, then the child's CPU seconds and peak RSS (MiB). A replicator that exited
/// before (a start-up error) fails the benchmark with its log.
pub fn stop(child: Child, log: &Path) -> (f64, f64) {
    let mut child = child;
    if let Ok(Some(st)) = child.try_wait() {
        panic!(
            "the replicator exited early ({st}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    // SAFETY: the pid is our child, not yet reaped (try_wait found it running).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (cpu, rss, _) = wait(child);
    (cpu, rss)
}

/// Waits for the child to exit: CPU seconds, peak RSS (MiB) and whether it exited 0.
///
/// Peak RSS is the kernel's high-water mark of the process's own memory (`VmHWM`), read
/// every few milliseconds by a second thread until it exits: wait4's `ru_maxrss` also holds
/// the memory of the process that spawned it (the kernel carries the pre-exec high-water
/// mark over exec), which overstated small processes by this benchmark's own size. This
/// thread blocks in wait4, so the caller's wall clock stops when the child exits.
pub fn wait(child: Child) -> (f64, f64, bool) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let pid = child.id() as i32;
    std::mem::forget(child);
    let (hwm, done) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let poller = {
        let (hwm, done) = (hwm.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let Some(k) = vm_hwm_kib(pid) else { break };
                hwm.fetch_max(k, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let (mut status, mut ru) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: valid out-pointers; the child is ours and reaped only here.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    done.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    assert_eq!(r, pid);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (
        secs(ru.ru_utime) + secs(ru.ru_stime),
        hwm.load(Ordering::Relaxed) as f64 / 1024.0,
        ok,
    )
}

/// `VmHWM` of a live process in KiB; `None` once it has exited (a zombie has no memory).
pub fn vm_hwm_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
