//! The `liteship` binary: parse arguments, set up logging and the runtime, dispatch, and turn
//! any error into one `Error: …` line on stderr and exit status 1.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use liteship::cli::{Cli, Command, normalize_args};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args_os()));
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Text logs on stdout (as Litestream), or stderr when stdout carries JSON output;
/// JSON logs when the config asks for `logging.type: json`.
fn init_logging(cli: &Cli) {
    let (level, json, to_stderr) = match &cli.command {
        Command::Restore(a) => (a.common.log_level.clone(), false, a.json),
        Command::Replicate(a) => liteship::cmd::replicate::logging_prefs(a),
        Command::Version => (None, false, false),
    };
    let level = level
        .or_else(|| std::env::var("LOG_LEVEL").ok())
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(format!("{level},aws=warn,hyper=warn"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let ansi = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    match (json, to_stderr) {
        (true, true) => builder.json().with_writer(std::io::stderr).init(),
        (true, false) => builder.json().with_writer(std::io::stdout).init(),
        (false, true) => builder.with_ansi(ansi).with_writer(std::io::stderr).init(),
        (false, false) => builder.with_ansi(ansi).with_writer(std::io::stdout).init(),
    }
}
