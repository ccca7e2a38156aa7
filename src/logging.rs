//! Log setup: level, text or JSON, stdout or stderr. The level comes from `-log-level`,
//! else `$LOG_LEVEL`, else the config's `logging.level`, else info; an invalid value from
//! any source is an error (a silent logger would hide every ERROR).

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

/// The levels `-log-level`, `LOG_LEVEL` and `logging.level` accept.
pub const LEVELS: &str = "trace, debug, info, warn, error";

/// Where and how to log.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: LevelFilter,
    pub json: bool,
    pub to_stderr: bool,
}

/// Parses a level, naming its source (`-log-level`, `LOG_LEVEL`, `logging.level`) on error.
pub fn parse_level(value: &str, source: &str) -> Result<LevelFilter, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "trace" => Ok(LevelFilter::TRACE),
        "debug" => Ok(LevelFilter::DEBUG),
        "info" => Ok(LevelFilter::INFO),
        "warn" => Ok(LevelFilter::WARN),
        "error" => Ok(LevelFilter::ERROR),
        "warning" => Err(format!(
            "{source}: invalid log level \"warning\": use warn (valid levels: {LEVELS})"
        )),
        other => Err(format!(
            "{source}: invalid log level {other:?}: use one of {LEVELS}"
        )),
    }
}

/// The level from the flag, the environment (an empty `LOG_LEVEL` counts as unset, as in
/// Litestream) or the config, in that order.
pub fn choose_level(
    flag: Option<&str>,
    env: Option<&str>,
    config: Option<&str>,
) -> Result<LevelFilter, String> {
    if let Some(f) = flag {
        return parse_level(f, "-log-level");
    }
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        return parse_level(e, "LOG_LEVEL");
    }
    if let Some(c) = config {
        return parse_level(c, "logging.level in the config");
    }
    Ok(LevelFilter::INFO)
}

/// Installs the global subscriber. The AWS SDK logs only errors unless the level is debug
/// or trace (its internal retries and credential-chain probing are not ours to report:
/// liteship reports the operation's outcome once).
pub fn init(s: &LogSettings) {
    let sdk = if s.level >= LevelFilter::DEBUG {
        LevelFilter::WARN
    } else {
        LevelFilter::ERROR
    };
    // Targets match by prefix: `aws` covers aws_config, aws_sdk_s3, aws_smithy_*.
    let filter = Targets::new()
        .with_default(s.level)
        .with_target("aws", sdk.min(s.level))
        .with_target("hyper", LevelFilter::WARN.min(s.level))
        .with_target("hyper_util", LevelFilter::WARN.min(s.level))
        .with_target("rustls", LevelFilter::WARN.min(s.level));
    let ansi = if s.to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let layer = fmt::layer().with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    match (s.json, s.to_stderr) {
        (true, true) => registry
            .with(layer.json().with_writer(std::io::stderr))
            .init(),
        (true, false) => registry
            .with(layer.json().with_writer(std::io::stdout))
            .init(),
        (false, true) => registry
            .with(layer.with_ansi(ansi).with_writer(std::io::stderr))
            .init(),
        (false, false) => registry
            .with(layer.with_ansi(ansi).with_writer(std::io::stdout))
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_from_every_source_are_validated() {
        assert_eq!(choose_level(None, None, None).unwrap(), LevelFilter::INFO);
        assert_eq!(
            choose_level(Some("DEBUG"), Some("error"), None).unwrap(),
            LevelFilter::DEBUG
        );
        assert_eq!(
            choose_level(None, Some(""), Some("warn")).unwrap(),
            LevelFilter::WARN
        );
        let e = choose_level(Some("verbose"), None, None).unwrap_err();
        assert!(e.contains("-log-level") && e.contains("verbose"), "{e}");
        let e = choose_level(None, Some("warning"), None).unwrap_err();
        assert!(e.contains("LOG_LEVEL") && e.contains("use warn"), "{e}");
        let e = choose_level(None, None, Some("")).unwrap_err();
        assert!(e.contains("logging.level"), "{e}");
    }
}
