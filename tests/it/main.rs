//! liteship's integration tests: one binary, so the S3 server and oracle installs are shared.

mod adversarial;
mod conformance;
mod deploy_files;
mod fault_matrix;
mod follow;
mod history_gaps;
mod net_faults;
mod nomad_job;
mod nomad_variants;
mod one_writer;
mod oracle_ltx;
mod replicate_core;
mod replicate_edges;
mod replicate_ops;
mod restore_compat;
mod restore_errors;
mod restore_faults;
mod restore_v3;
mod s3_errors;
mod support;
mod tls;
mod tools;
mod upload_cost;
