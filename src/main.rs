//! The `liteship` binary: parse arguments, set up logging and the runtime, dispatch, and turn
//! any error into one `Error: …` line on stderr and exit status 1.

use std::process::ExitCode;

use clap::Parser;
use liteship::cli::{Cli, Command, normalize_args};
use liteship::logging::{LogSettings, choose_level};

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args_os()));
    match log_settings(&cli) {
        Ok(s) => liteship::logging::init(&s),
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    }
    liteship::fsutil::raise_nofile_limit();
    liteship::configure_sqlite();
    if matches!(
        cli.command,
        Command::Ltx(_) | Command::Verify(_) | Command::Status(_)
    ) {
        // Listing commands end quietly when their reader goes away (`liteship ltx | head`)
        // instead of panicking on a broken pipe. Their network writes use send(2) with
        // MSG_NOSIGNAL (Rust's sockets), so only stdout is affected.
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if matches!(cli.command, Command::Replicate(_)) {
        builder.max_blocking_threads(REPLICATE_BLOCKING_THREADS);
        limit_malloc_arenas();
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Restore(args) => liteship::cmd::restore::run(*args).await,
            Command::Replicate(args) => liteship::cmd::replicate::run(*args).await,
            Command::Ltx(args) => liteship::cmd::inspect::ltx(args).await,
            Command::Verify(args) => liteship::cmd::inspect::verify(args).await,
            Command::Status(args) => liteship::cmd::status::run(args).await,
            Command::Version => {
                println!(
                    "liteship {} (sqlite {})",
                    env!("CARGO_PKG_VERSION"),
                    liteship::sqlite_version()
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    // Blocking tasks still running (a cancelled upload's file read) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Threads for `replicate`'s SQLite calls and file I/O (tokio's default is 512). Every
/// blocking call there is short or bounded by a timeout. One call does wait for others: an
/// automatic restore's snapshot decoders (at most its parallelism, 8, and restores run one
/// at a time) each hold a thread while their file-replica reads need another, so the pool
/// must hold at least 16 (test `restore_before_replicating_runs_the_parallel_decoder`).
/// Each thread costs its stack's touched pages and thread-local caches, and the pool keeps
/// every thread it ever started while work arrives more often than its keep-alive: with
/// 100 databases the pool stayed at its cap after start-up (peak RSS 53 MiB with 512,
/// 23.7-24.5 MiB with 64, 21.8-22.0 MiB with 24; CPU the same within the noise).
const REPLICATE_BLOCKING_THREADS: usize = 24;

/// Text logs on stdout (as Litestream), or stderr when stdout carries JSON output; JSON
/// logs when the config asks for `logging.type: json`. An invalid level is an error.
fn log_settings(cli: &Cli) -> Result<LogSettings, String> {
    let env = std::env::var("LOG_LEVEL").ok();
    let (flag, config, json, to_stderr) = match &cli.command {
        Command::Restore(a) => (a.common.log_level.clone(), None, false, a.json),
        Command::Replicate(a) => {
            let p = liteship::cmd::replicate::logging_prefs(a);
            (a.common.log_level.clone(), p.level, p.json, p.stderr)
        }
        Command::Ltx(a) => (a.common.log_level.clone(), None, false, true),
        Command::Verify(a) => (a.common.log_level.clone(), None, false, true),
        Command::Status(a) => (a.common.log_level.clone(), None, false, true),
        Command::Version => (None, None, false, false),
    };
    let level = choose_level(flag.as_deref(), env.as_deref(), config.as_deref())?;
    Ok(LogSettings {
        level,
        json,
        to_stderr,
    })
}

/// glibc gives each thread that allocates its own arena, up to eight per core, and keeps
/// what each arena freed. A replicator's allocations hop between the runtime's workers and
/// its blocking threads, so every arena ends up holding a little of everything. Two arenas
/// serve a sidecar that is idle most of the time (see BENCHMARKS.md for the RSS it saves).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters (and is thread-safe).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
