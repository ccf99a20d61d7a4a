//! The deployment assets (deploy/, terraform/) checked the way CI can without a cluster or a
//! container engine: the Containerfile against the repository, every Kustomize overlay rendered
//! by kubectl and validated against the Kubernetes schemas and the restricted pod security
//! profile, the broker settings of each overlay accepted by `sediment serve --check-config`, the
//! dashboard and alerts against the metrics the broker exports, every Terraform file parsed,
//! and checkov on terraform/ and the rendered overlays. The checks live in
//! tests/python/check_deploy.py; kubectl and checkov come from scripts/setup-test-deps.sh.

use std::path::PathBuf;

use sediment_tests::{run_python, sediment_bin};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn tool(rel: &str) -> String {
    let path = repo().join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-test-deps.sh",
        path.display()
    );
    path.display().to_string()
}

/// Runs one check of check_deploy.py (which exits non-zero, failing the test, on any problem)
/// and returns what it reported.
fn check(args: &[&str]) -> String {
    let out = run_python("check_deploy.py", args).expect("check_deploy.py");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn overlay(name: &str) -> String {
    let kubectl = tool(".tools/bin/kubectl");
    let bin = sediment_bin().display().to_string();
    check(&["overlay", name, "--kubectl", &kubectl, "--sediment", &bin])
}

fn assert_overlay_report(report: &str, name: &str, archive_url: &str) {
    assert!(report.starts_with(&format!("overlay {name}: ")), "{report}");
    assert!(report.contains("valid for Kubernetes 1.33"), "{report}");
    assert!(report.contains("restricted pod security holds"), "{report}");
    assert!(
        report.contains(&format!(
            "--check-config accepted (archive.url={archive_url})"
        )),
        "{report}"
    );
}

#[test]
fn containerfile_copies_paths_that_exist_and_runs_as_non_root() {
    let report = check(&["containerfile"]);
    assert!(report.contains("2 stages"), "{report}");
    assert!(report.contains("COPY sources exist"), "{report}");
    assert!(report.contains("USER 10001"), "{report}");
    assert!(
        report.contains("ENTRYPOINT ['/usr/local/bin/sediment', 'serve']"),
        "{report}"
    );
}

#[test]
fn kubernetes_overlay_is_valid_restricted_and_its_settings_are_accepted() {
    let report = overlay("kubernetes");
    assert_overlay_report(&report, "kubernetes", "s3://sediment-archive/cluster-a");
}

#[test]
fn openshift_overlay_is_valid_restricted_without_fixed_uids_and_its_settings_are_accepted() {
    let report = overlay("openshift");
    assert_overlay_report(&report, "openshift", "s3://sediment-archive/cluster-a");
    assert!(
        report.contains("ServiceMonitor"),
        "monitoring component: {report}"
    );
}

#[test]
fn minio_dev_overlay_is_valid_restricted_and_its_settings_are_accepted() {
    let report = overlay("minio-dev");
    assert_overlay_report(&report, "minio-dev", "s3://sediment-archive/dev");
    assert!(report.contains("Deployment"), "MinIO: {report}");
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let out = run_python("check_dashboard_metrics.py", &[]).expect("check_dashboard_metrics.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" 0 problem(s)"), "{stdout}");
}

#[test]
fn every_terraform_file_parses() {
    let report = check(&["terraform"]);
    for module in [
        "terraform/examples/openshift-minio",
        "terraform/modules/minio-bucket",
        "terraform/modules/s3-bucket",
    ] {
        assert!(report.contains(module), "{module} not parsed: {report}");
    }
}

#[test]
fn checkov_finds_nothing_unjustified_in_terraform_or_the_rendered_overlays() {
    let kubectl = tool(".tools/bin/kubectl");
    let checkov = tool(".venv-checkov/bin/checkov");
    let report = check(&["checkov", "--checkov", &checkov, "--kubectl", &kubectl]);
    assert!(report.contains("checkov terraform/: "), "{report}");
    assert!(report.contains("checkov rendered overlays: "), "{report}");
    assert_eq!(report.matches(", 0 failed").count(), 2, "{report}");
}
