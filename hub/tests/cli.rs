//! The `kho-hub` binary itself: a bad config stops it before anything starts, naming each field.

use std::process::Command;

#[test]
fn bad_config_exits_non_zero_naming_the_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        "[hub]\nlisten = \"not-an-address\"\ndata_dir = \"data\"\n[limits]\nmax_concurrent_requests = 0\n\
         [[agent]]\nid = \"so-y-te-01\"\ndatasets = [\"ho_so\"]\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_kho-hub")).arg("--config").arg(&config).output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in ["hub.listen", "limits.max_concurrent_requests", "agent[0].token"] {
        assert!(stderr.contains(field), "{field} not named in: {stderr}");
    }
    assert!(!dir.path().join("data").exists(), "nothing written for a bad config");

    let out = Command::new(env!("CARGO_BIN_EXE_kho-hub"))
        .args(["--config", "/nonexistent/hub.toml", "check"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/hub.toml"));
}
