//! Sets `GPUSCOUT_COMMIT` for `gpuscout --version` and `gpuscout_build_info`: the
//! `GPUSCOUT_COMMIT` environment variable when the build sets it (a container build without
//! `.git`), otherwise the checkout's commit, otherwise `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GPUSCOUT_COMMIT");
    // A new commit or branch changes HEAD or the ref it points to.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(reference) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed=.git/{reference}");
    }
    let commit = std::env::var("GPUSCOUT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GPUSCOUT_COMMIT={commit}");
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    if !out.status.success() || commit.is_empty() {
        return None;
    }
    Some(commit)
}
