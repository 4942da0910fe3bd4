//! Build script of the sidecar: fetches the operator console's browser
//! assets from the npm registry (`npm ci` in `console/`, pinned by its
//! `package-lock.json`) so that the binary embeds them (`src/http/console/assets.rs`).
//! Nothing is fetched when the console runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Chart.js's self-contained build, as npm installs it.
const CHART_JS: &str = "node_modules/chart.js/dist/chart.umd.min.js";

/// A copy of the lock file `npm ci` last installed, to tell a stale
/// `node_modules` from a current one.
const INSTALLED_LOCK: &str = "node_modules/.tollgate-package-lock.json";

fn main() {
    let console = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"))
        .join("console");
    for input in [
        "package.json",
        "package-lock.json",
        CHART_JS,
        INSTALLED_LOCK,
    ] {
        println!("cargo:rerun-if-changed={}", console.join(input).display());
    }
    let lock = read(&console.join("package-lock.json"));
    let installed = std::fs::read(console.join(INSTALLED_LOCK)).ok();
    if installed.as_ref() != Some(&lock) || !console.join(CHART_JS).is_file() {
        npm_ci(&console);
        std::fs::write(console.join(INSTALLED_LOCK), &lock)
            .unwrap_or_else(|e| panic!("cannot write {INSTALLED_LOCK}: {e}"));
    }
    println!(
        "cargo:rustc-env=TOLLGATE_CONSOLE_CHART_JS={}",
        console.join(CHART_JS).display()
    );
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `npm ci`: exactly the lock file's packages, their integrity checked, no
/// install scripts run.
fn npm_ci(console: &Path) {
    let npm = std::env::var("NPM").unwrap_or_else(|_| "npm".to_string());
    let status = Command::new(&npm)
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
        ])
        .current_dir(console)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "the console's assets come from the npm registry, and `{npm}` cannot run ({e}): \
                 install Node.js and npm (Debian: apt-get install nodejs npm), then build again"
            )
        });
    assert!(
        status.success(),
        "`npm ci` in {} failed ({status}); the console's assets come from the npm registry",
        console.display()
    );
}
