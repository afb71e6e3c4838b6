//! Harness for Kho's end-to-end tests and benchmarks: real `kho-hub` and `kho-agent` processes,
//! a generated department database, and row-by-row comparison of source and warehouse.
//!
//! The binaries are the ones cargo built for this workspace (`cargo test --workspace` builds them,
//! because the agent and hub crates have integration tests of their own). Each process gets its
//! own temporary directory and log file; on failure the tests print the logs' tails.

#![forbid(unsafe_code)]

pub mod compare;
pub mod cut_proxy;
pub mod mosquitto;
pub mod procs;
pub mod remote;
pub mod source;

use std::path::PathBuf;

/// Path of a workspace binary built in the same profile as the running test or bench.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary> or target/<profile>/<bench-binary>
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (`cargo test --workspace` or `cargo build --bins`)",
        path.display()
    );
    path
}
