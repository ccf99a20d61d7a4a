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

fn check(args: &[&str], expect: &str) {
    let out = run_python("check_deploy.py", args).expect("check_deploy.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(expect), "unexpected output: {stdout}");
}

fn overlay(name: &str) {
    let kubectl = tool(".tools/bin/kubectl");
    let bin = sediment_bin().display().to_string();
    check(
        &["overlay", name, "--kubectl", &kubectl, "--sediment", &bin],
        &format!("overlay {name}: "),
    );
}

#[test]
fn containerfile_copies_paths_that_exist_and_runs_as_non_root() {
    check(&["containerfile"], "USER 10001");
}

#[test]
fn kubernetes_overlay_is_valid_restricted_and_its_settings_are_accepted() {
    overlay("kubernetes");
}

#[test]
fn openshift_overlay_is_valid_restricted_without_fixed_uids_and_its_settings_are_accepted() {
    overlay("openshift");
}

#[test]
fn minio_dev_overlay_is_valid_restricted_and_its_settings_are_accepted() {
    overlay("minio-dev");
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let out = run_python("check_dashboard_metrics.py", &[]).expect("check_dashboard_metrics.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" 0 problem(s)"), "{stdout}");
}

#[test]
fn every_terraform_file_parses() {
    check(&["terraform"], "terraform: ");
}

#[test]
fn checkov_finds_nothing_unjustified_in_terraform_or_the_rendered_overlays() {
    let kubectl = tool(".tools/bin/kubectl");
    let checkov = tool(".venv-checkov/bin/checkov");
    check(
        &["checkov", "--checkov", &checkov, "--kubectl", &kubectl],
        "checkov rendered overlays: ",
    );
}
