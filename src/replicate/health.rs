//! Per-database health: one owner of "how is this database doing", fed by every loop and
//! read by `/readyz`, `/metrics`, the logs and the exit status.
//!
//! States:
//! - **starting**: the replica does not hold a restorable state of this database yet, and
//!   nothing has failed (the first snapshot is on its way);
//! - **ready**: the replica is restorable and no committed change has waited longer than
//!   the allowed lag;
//! - **degraded** (reason): something is failing or behind and liteship is retrying or
//!   healing (an upload error, a sync error, a replica that lost files, lag);
//! - **failed** (reason): liteship will not go on with this database without the operator
//!   (refused, cannot be opened, replaced, its lease lost). The process exits 1 at shutdown.
//!
//! Errors are logged rate-limited per component and cause: the first occurrence at once as
//! an ERROR, then one summary line per interval with the count; a recovery is one INFO
//! line. Every occurrence counts in `liteship_errors_total`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::Cause;
use super::metrics::Metrics;

/// One summary line per component and cause per this interval while an error persists.
/// Litestream logs at most one sync error per 30 s as well.
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// How long a committed change may wait for its upload before the database is degraded.
/// Twice the longest normal path (sync interval + compaction upload) with a margin; the
/// README promises it.
pub const MAX_LAG: Duration = Duration::from_secs(30);

/// The health states (the `state` label of `liteship_db_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Ready,
    Degraded,
    Failed,
}

impl State {
    pub const ALL: [State; 4] = [
        State::Starting,
        State::Ready,
        State::Degraded,
        State::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Degraded => "degraded",
            State::Failed => "failed",
        }
    }
}

/// Which part of the replicator reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// Listing the replica at start.
    Listing,
    /// WAL -> staged level-0 files.
    Sync,
    Checkpoint,
    /// Staged files -> replica.
    Upload,
    /// Compaction, snapshots, retention.
    Maintenance,
    /// The periodic check that the replica still holds a restorable state.
    Verify,
    /// The replica's writer lease.
    Lease,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Listing => "list replica",
            Component::Sync => "sync",
            Component::Checkpoint => "checkpoint",
            Component::Upload => "upload",
            Component::Maintenance => "maintenance",
            Component::Verify => "replica check",
            Component::Lease => "writer lease",
        }
    }

    /// Whether a failure here means the replica is falling behind (degraded); failures of
    /// the others are logged and counted but leave a restorable replica restorable.
    fn degrades(self) -> bool {
        matches!(
            self,
            Component::Listing
                | Component::Sync
                | Component::Upload
                | Component::Verify
                | Component::Lease
        )
    }
}

#[derive(Debug, Clone)]
struct Problem {
    cause: Cause,
    message: String,
    since: Instant,
}

#[derive(Debug)]
struct LogEntry {
    last_logged: Instant,
    suppressed: u64,
    total: u64,
}

/// Whether the replica holds a state this database can be restored to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restorable {
    /// Not known yet (start-up).
    Unknown,
    Yes,
    No(String),
}

#[derive(Debug)]
struct Inner {
    failed: Option<String>,
    problems: BTreeMap<Component, Problem>,
    restorable: Restorable,
    /// Commit time (ms since the epoch) of the oldest change not yet durable in the replica.
    pending_since_ms: Option<i64>,
    local_txid: u64,
    remote_txid: u64,
    wal_size: u64,
    /// Who holds the writer lease, as `status` shows it.
    lease: String,
    /// The latest failure (ms since the epoch, component, message).
    last_error: Option<(i64, Component, String)>,
    log: HashMap<(Component, Cause), LogEntry>,
}

/// The health of one database.
#[derive(Debug)]
pub struct Health {
    db: String,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
    log_every: Duration,
}

/// What `/readyz` and the status report show.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub state: State,
    pub reason: Option<String>,
    pub lag_seconds: f64,
    pub local_txid: u64,
    pub remote_txid: u64,
    pub wal_size: u64,
    pub lease: String,
    pub last_error: Option<(i64, Component, String)>,
}

impl Health {
    pub fn new(db: String, metrics: Arc<Metrics>) -> Health {
        let h = Health {
            db,
            metrics,
            inner: Mutex::new(Inner {
                failed: None,
                problems: BTreeMap::new(),
                restorable: Restorable::Unknown,
                pending_since_ms: None,
                local_txid: 0,
                remote_txid: 0,
                wal_size: 0,
                lease: "not acquired yet".into(),
                last_error: None,
                log: HashMap::new(),
            }),
            log_every: ERROR_LOG_INTERVAL,
        };
        h.refresh_metrics();
        h
    }

    pub fn db(&self) -> &str {
        &self.db
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A failure of `component`: counted, logged (rate-limited), and the database is
    /// degraded while it persists (for the components that degrade).
    pub fn report(&self, component: Component, cause: Cause, message: &str) {
        self.metrics
            .errors
            .with_label_values(&[&self.db, component.name(), cause.name()])
            .inc();
        let mut g = self.lock();
        let now = Instant::now();
        g.last_error = Some((crate::timefmt::now_ms(), component, message.to_string()));
        let since = g
            .problems
            .get(&component)
            .filter(|p| p.cause == cause)
            .map_or(now, |p| p.since);
        g.problems.insert(
            component,
            Problem {
                cause,
                message: message.to_string(),
                since,
            },
        );
        let every = self.log_every;
        let entry = g.log.entry((component, cause)).or_insert(LogEntry {
            last_logged: now - every,
            suppressed: 0,
            total: 0,
        });
        entry.total += 1;
        if entry.last_logged.elapsed() < every {
            entry.suppressed += 1;
            return;
        }
        let repeated = std::mem::take(&mut entry.suppressed);
        entry.last_logged = now;
        drop(g);
        let what = component.name();
        if repeated == 0 {
            tracing::error!(db = %self.db, cause = cause.name(), error = %message, "{what} failed");
        } else {
            tracing::error!(db = %self.db, cause = cause.name(), error = %message, repeated, "{what} still failing ({repeated} more failures in the last {}s)", every.as_secs());
        }
    }

    /// A fault that is already healed (or needs no retry): logged as an ERROR and counted,
    /// rate-limited like [`Health::report`], without degrading the state.
    pub fn incident(&self, component: Component, cause: Cause, message: &str) {
        self.report(component, cause, message);
        self.lock().problems.remove(&component);
    }

    /// `component` succeeded: clears its problem, with one INFO line if it had one.
    pub fn clear(&self, component: Component) {
        let mut g = self.lock();
        let Some(p) = g.problems.remove(&component) else {
            return;
        };
        let failures: u64 = g
            .log
            .iter()
            .filter(|((c, _), _)| *c == component)
            .map(|(_, e)| e.total)
            .sum();
        g.log.retain(|(c, _), _| *c != component);
        drop(g);
        tracing::info!(db = %self.db, after_s = p.since.elapsed().as_secs(), failures, "{} recovered", component.name());
    }

    /// The message of `component`'s current problem, if it has one.
    pub fn problem_message(&self, component: Component) -> Option<String> {
        self.lock()
            .problems
            .get(&component)
            .map(|p| p.message.clone())
    }

    /// The cause of `component`'s current problem, if it has one.
    pub fn problem(&self, component: Component) -> Option<Cause> {
        self.lock().problems.get(&component).map(|p| p.cause)
    }

    /// The database cannot go on without the operator. Logged once as an ERROR.
    pub fn fail(&self, reason: String) {
        let mut g = self.lock();
        if g.failed.is_some() {
            return;
        }
        g.failed = Some(reason.clone());
        drop(g);
        tracing::error!(db = %self.db, "{reason}");
        self.refresh_metrics();
    }

    pub fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    pub fn set_restorable(&self, r: Restorable) {
        let mut g = self.lock();
        if g.restorable == r {
            return;
        }
        let was = std::mem::replace(&mut g.restorable, r.clone());
        drop(g);
        match (&was, &r) {
            (_, Restorable::No(why)) => {
                tracing::error!(db = %self.db, "the replica is not restorable to this database's position: {why}")
            }
            (Restorable::No(_), Restorable::Yes) => {
                tracing::info!(db = %self.db, "the replica is restorable again")
            }
            _ => {}
        }
    }

    pub fn restorable(&self) -> Restorable {
        self.lock().restorable.clone()
    }

    pub fn set_local_txid(&self, txid: u64) {
        self.lock().local_txid = txid;
    }

    pub fn set_remote_txid(&self, txid: u64) {
        self.lock().remote_txid = txid;
        self.metrics
            .remote_txid
            .with_label_values(&[&self.db])
            .set(txid as i64);
    }

    pub fn set_wal_size(&self, bytes: u64) {
        self.lock().wal_size = bytes;
    }

    /// Who holds the writer lease (for `status`).
    pub fn set_lease(&self, text: String) {
        self.lock().lease = text;
    }

    /// The state as `status` reports it (JSON).
    pub fn status_json(&self) -> serde_json::Value {
        let s = self.snapshot();
        serde_json::json!({
            "db": self.db,
            "state": s.state.name(),
            "reason": s.reason,
            "local_txid": format!("{:016x}", s.local_txid),
            "remote_txid": format!("{:016x}", s.remote_txid),
            "wal_size": s.wal_size,
            "lag_seconds": (s.lag_seconds * 10.0).round() / 10.0,
            "lease": s.lease,
            "last_error": s.last_error.map(|(ms, c, m)| serde_json::json!({
                "at": crate::timefmt::format_rfc3339_ms(ms),
                "component": c.name(),
                "message": m,
            })),
        })
    }

    /// The oldest change not yet durable was committed at `ms` (or earlier); `None` when
    /// everything committed is durable.
    pub fn set_pending_since(&self, ms: Option<i64>) {
        self.lock().pending_since_ms = ms;
    }

    /// Marks changes as pending since `ms` unless older ones already are.
    pub fn note_pending(&self, ms: i64) {
        let mut g = self.lock();
        g.pending_since_ms = Some(g.pending_since_ms.map_or(ms, |p| p.min(ms)));
    }

    /// The current state, its reason and the figures `/readyz` shows.
    pub fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        let lag = g.pending_since_ms.map_or(0.0, |ms| {
            ((crate::timefmt::now_ms() - ms).max(0) as f64) / 1000.0
        });
        let (state, reason) = state_of(&g, lag);
        Snapshot {
            state,
            reason,
            lag_seconds: lag,
            local_txid: g.local_txid,
            remote_txid: g.remote_txid,
            wal_size: g.wal_size,
            lease: g.lease.clone(),
            last_error: g.last_error.clone(),
        }
    }

    /// `Ok` when ready, else the reason, prefixed with the database.
    pub fn readiness(&self) -> Result<(), String> {
        let s = self.snapshot();
        match s.state {
            State::Ready => Ok(()),
            _ => Err(format!(
                "{}: {}: {}",
                self.db,
                s.state.name(),
                s.reason.unwrap_or_default()
            )),
        }
    }

    /// Updates the state and lag gauges (called before every scrape and by the loops).
    pub fn refresh_metrics(&self) {
        let s = self.snapshot();
        for st in State::ALL {
            self.metrics
                .state
                .with_label_values(&[&self.db, st.name()])
                .set(i64::from(st == s.state));
        }
        self.metrics
            .lag_seconds
            .with_label_values(&[&self.db])
            .set(s.lag_seconds);
    }
}

fn state_of(g: &Inner, lag: f64) -> (State, Option<String>) {
    if let Some(f) = &g.failed {
        return (State::Failed, Some(f.clone()));
    }
    let problem = g
        .problems
        .iter()
        .filter(|(c, _)| c.degrades())
        .min_by_key(|(_, p)| p.since)
        .map(|(c, p)| {
            format!(
                "{} failing ({}): {}",
                c.name(),
                p.cause.describe(),
                p.message
            )
        });
    if let Restorable::No(why) = &g.restorable {
        return (
            State::Degraded,
            Some(format!("replica not restorable: {why}")),
        );
    }
    if lag > MAX_LAG.as_secs_f64() {
        let why = problem.unwrap_or_else(|| "uploads are behind".into());
        return (
            State::Degraded,
            Some(format!("replication lag {lag:.0}s: {why}")),
        );
    }
    if let Some(p) = problem {
        return (State::Degraded, Some(p));
    }
    if g.restorable == Restorable::Unknown {
        return (
            State::Starting,
            Some("no restorable state in the replica yet".into()),
        );
    }
    (State::Ready, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new("/db".into(), Arc::new(Metrics::new()))
    }

    #[test]
    fn states_follow_reports() {
        let h = health();
        assert_eq!(h.snapshot().state, State::Starting);
        h.set_restorable(Restorable::Yes);
        assert_eq!(h.snapshot().state, State::Ready);
        assert!(h.readiness().is_ok());
        h.report(Component::Upload, Cause::AccessDenied, "denied");
        let s = h.snapshot();
        assert_eq!(s.state, State::Degraded);
        assert!(s.reason.unwrap().contains("credentials rejected"));
        h.report(Component::Maintenance, Cause::Other, "x");
        h.clear(Component::Upload);
        assert_eq!(h.snapshot().state, State::Ready, "maintenance alone");
        h.set_pending_since(Some(crate::timefmt::now_ms() - 40_000));
        let s = h.snapshot();
        assert_eq!(s.state, State::Degraded);
        assert!(s.lag_seconds >= 40.0 && s.reason.unwrap().contains("lag"));
        h.set_pending_since(None);
        h.set_restorable(Restorable::No("gone".into()));
        assert!(h.readiness().unwrap_err().contains("not restorable: gone"));
        h.fail("refused".into());
        h.set_restorable(Restorable::Yes);
        assert_eq!(h.snapshot().state, State::Failed);
        h.refresh_metrics();
        let text = h.metrics.render();
        assert!(
            text.contains(r#"liteship_db_state{db="/db",state="failed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"liteship_errors_total{cause="access_denied",component="upload",db="/db"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn repeated_errors_are_counted_but_logged_once_per_interval() {
        let h = health();
        for _ in 0..10 {
            h.report(Component::Sync, Cause::DiskFull, "full");
        }
        let g = h.lock();
        let e = &g.log[&(Component::Sync, Cause::DiskFull)];
        assert_eq!((e.total, e.suppressed), (10, 9));
    }
}
