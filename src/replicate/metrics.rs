//! Prometheus metrics: Litestream's names where they exist (spec 6.1), so existing dashboards
//! keep working, plus liteship's replication lag and remote position.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the replicator exports.
pub struct Metrics {
    pub registry: Registry,
    pub db_size: IntGaugeVec,
    pub wal_size: IntGaugeVec,
    pub total_wal_bytes: IntCounterVec,
    pub txid: IntGaugeVec,
    pub sync_count: IntCounterVec,
    pub sync_error_count: IntCounterVec,
    pub sync_seconds: GaugeVec,
    pub disk_full: IntGaugeVec,
    pub checkpoint_count: IntCounterVec,
    pub checkpoint_error_count: IntCounterVec,
    pub replica_operation_total: IntCounterVec,
    pub replica_operation_bytes: IntCounterVec,
    pub replica_operation_errors: IntCounterVec,
    pub replica_operation_seconds: HistogramVec,
    pub remote_txid: IntGaugeVec,
    pub lag_seconds: GaugeVec,
    pub staging_bytes: IntGaugeVec,
    pub staging_limit_hits: IntCounterVec,
    pub full_images: IntCounterVec,
    pub maintenance_errors: IntCounterVec,
    pub refused: IntGaugeVec,
    pub state: IntGaugeVec,
    pub errors: IntCounterVec,
    pub lease_held: IntGaugeVec,
    pub conditional_writes: IntGaugeVec,
}

fn int_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let m = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let hist = HistogramVec::new(
            HistogramOpts::new(
                "litestream_replica_operation_duration_seconds",
                "Duration of replica operations",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0]),
            &["replica_type", "operation"],
        )
        .expect("valid metric");
        r.register(Box::new(hist.clone())).expect("unique metric");
        Metrics {
            db_size: int_gauge(
                &r,
                "litestream_db_size",
                "Database file size in bytes",
                &["db"],
            ),
            wal_size: int_gauge(
                &r,
                "litestream_wal_size",
                "Synced (logical) WAL offset in bytes",
                &["db"],
            ),
            total_wal_bytes: counter(
                &r,
                "litestream_total_wal_bytes",
                "WAL bytes converted to LTX",
                &["db"],
            ),
            txid: int_gauge(&r, "litestream_txid", "Current local TXID", &["db"]),
            sync_count: counter(&r, "litestream_sync_count", "Sync runs", &["db"]),
            sync_error_count: counter(
                &r,
                "litestream_sync_error_count",
                "Failed sync runs",
                &["db"],
            ),
            sync_seconds: gauge(&r, "litestream_sync_seconds", "Time spent syncing", &["db"]),
            disk_full: int_gauge(
                &r,
                "litestream_disk_full",
                "1 while staging fails with a full disk",
                &["db"],
            ),
            checkpoint_count: counter(
                &r,
                "litestream_checkpoint_count",
                "Checkpoints",
                &["db", "mode"],
            ),
            checkpoint_error_count: counter(
                &r,
                "litestream_checkpoint_error_count",
                "Failed checkpoints",
                &["db", "mode"],
            ),
            replica_operation_total: counter(
                &r,
                "litestream_replica_operation_total",
                "Replica operations",
                &["replica_type", "operation"],
            ),
            replica_operation_bytes: counter(
                &r,
                "litestream_replica_operation_bytes",
                "Bytes written to the replica",
                &["replica_type", "operation"],
            ),
            replica_operation_errors: counter(
                &r,
                "litestream_replica_operation_errors_total",
                "Failed replica operations",
                &["replica_type", "operation", "code"],
            ),
            replica_operation_seconds: hist,
            remote_txid: int_gauge(
                &r,
                "liteship_remote_txid",
                "Highest TXID durable in the replica",
                &["db"],
            ),
            lag_seconds: gauge(
                &r,
                "liteship_replication_lag_seconds",
                "Age of the oldest committed change not yet durable in the replica (0 when caught up)",
                &["db"],
            ),
            staging_bytes: int_gauge(
                &r,
                "liteship_staging_bytes",
                "Bytes of staged level-0 files not yet removed",
                &["db"],
            ),
            staging_limit_hits: counter(
                &r,
                "liteship_staging_limit_hits",
                "Times staged files were replaced by a full image because the staging limit was hit",
                &["db"],
            ),
            full_images: counter(
                &r,
                "liteship_full_level0_images",
                "Full level-0 images written (continuity could not be proven)",
                &["db"],
            ),
            maintenance_errors: counter(
                &r,
                "liteship_maintenance_errors",
                "Failed compaction, snapshot or retention runs (each is retried on the next tick)",
                &["db"],
            ),
            refused: int_gauge(
                &r,
                "liteship_db_refused",
                "1 while a database is refused (it does not descend from the replica)",
                &["db"],
            ),
            state: int_gauge(
                &r,
                "liteship_db_state",
                "1 for the database's current health state (starting, ready, degraded, failed)",
                &["db", "state"],
            ),
            errors: counter(
                &r,
                "liteship_errors_total",
                "Failures by component (sync, upload, …) and cause (unreachable, disk_full, …)",
                &["db", "component", "cause"],
            ),
            lease_held: int_gauge(
                &r,
                "liteship_lease_held",
                "1 while this process holds the replica's writer lease",
                &["db"],
            ),
            conditional_writes: int_gauge(
                &r,
                "liteship_conditional_writes",
                "1 when the replica honours conditional writes (the lease protects it), 0 when the server ignores them, -1 before the probe",
                &["db"],
            ),
            registry: r,
        }
    }

    /// Creates a database's series at their initial values, so that dashboards and alerts
    /// (`increase(...)`, `== 1`) see them from the first scrape, not from the first event.
    pub fn init_db(&self, db: &str) {
        let l = [db];
        for c in [
            &self.sync_error_count,
            &self.staging_limit_hits,
            &self.full_images,
            &self.maintenance_errors,
            &self.total_wal_bytes,
            &self.sync_count,
        ] {
            c.with_label_values(&l).inc_by(0);
        }
        for mode in ["PASSIVE", "TRUNCATE"] {
            self.checkpoint_count
                .with_label_values(&[db, mode])
                .inc_by(0);
            self.checkpoint_error_count
                .with_label_values(&[db, mode])
                .inc_by(0);
        }
        for g in [&self.refused, &self.disk_full, &self.lease_held] {
            g.with_label_values(&l).set(0);
        }
        self.conditional_writes.with_label_values(&l).set(-1);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
