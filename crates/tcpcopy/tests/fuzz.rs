//! The fuzz targets (fuzz/, cargo-fuzz): each is built with coverage instrumentation and run for
//! a bounded time (`TCPCOPY_FUZZ_SECONDS`, 20 s by default; 0 skips the runs) after replaying
//! the crashes it once found (fuzz/regressions/<target>/), and the test fails on any crash. Without
//! cargo-fuzz the runs are skipped with a note, unless `TCPCOPY_REQUIRE_FUZZ=1` (as CI sets it):
//! then they fail. The build needs the nightly `-Z` flags cargo-fuzz passes, which a stable
//! toolchain accepts with `RUSTC_BOOTSTRAP=1`, set for the fuzz build only.
//!
//! Also checks that the seed corpora (fuzz/seeds/) are what `tests/fuzz/seeds.rs` generates:
//! regenerate them with `UPDATE_FUZZ_SEEDS=1 cargo test --release -p tcpcopy --test fuzz seed`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

#[path = "fuzz/seeds.rs"]
mod seeds;

/// Every target, as named in fuzz/Cargo.toml.
const TARGETS: [&str; 8] = [
    "wire",
    "pcap",
    "protocol",
    "http",
    "comparator",
    "heads",
    "session",
    "dialect",
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn seed_corpora_are_generated() {
    let update = std::env::var_os("UPDATE_FUZZ_SEEDS").is_some();
    let root = fuzz_dir().join("seeds");
    let mut stale = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    for (target, name, bytes) in seeds::all() {
        let path = root.join(target).join(&name);
        expected.insert(path.clone());
        if update {
            std::fs::create_dir_all(path.parent().expect("a seed has a folder")).unwrap();
            std::fs::write(&path, &bytes).expect("write a seed");
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(path.display().to_string());
        }
    }
    for target in TARGETS {
        let dir = root.join(target);
        assert!(
            expected.iter().any(|p| p.starts_with(&dir)),
            "no seeds for {target}"
        );
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if !expected.contains(&path) {
                if update {
                    std::fs::remove_file(&path).expect("remove a stale seed");
                } else {
                    stale.push(format!("{} (not generated)", path.display()));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "seed corpora out of date, regenerate with UPDATE_FUZZ_SEEDS=1 cargo test --release -p \
         tcpcopy --test fuzz seed: {stale:?}"
    );
}

/// One run of the fuzzers at a time (they would share two cores), after one build of all.
static FUZZING: Mutex<()> = Mutex::new(());
static BUILT: OnceLock<Result<(), String>> = OnceLock::new();

fn seconds() -> u64 {
    std::env::var("TCPCOPY_FUZZ_SECONDS")
        .ok()
        .map(|s| {
            s.parse()
                .expect("TCPCOPY_FUZZ_SECONDS: a number of seconds")
        })
        .unwrap_or(20)
}

fn cargo_fuzz(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.arg("fuzz")
        .args(args)
        .current_dir(fuzz_dir())
        .env("RUSTC_BOOTSTRAP", "1")
        // The instrumented build keeps to fuzz/target, whatever the outer build uses.
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

/// Whether the runs can go ahead: cargo-fuzz is installed (or its absence is the failure
/// `TCPCOPY_REQUIRE_FUZZ=1` asks for), and fuzzing time was not set to zero.
fn fuzzing_enabled() -> bool {
    if seconds() == 0 {
        eprintln!("TCPCOPY_FUZZ_SECONDS=0: fuzz targets not run");
        return false;
    }
    let present = cargo_fuzz(&["--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var("TCPCOPY_REQUIRE_FUZZ").as_deref() != Ok("1"),
            "TCPCOPY_REQUIRE_FUZZ=1 but cargo-fuzz is missing: cargo install cargo-fuzz --locked"
        );
        eprintln!("cargo-fuzz not installed (cargo install cargo-fuzz --locked): not fuzzing");
    }
    present
}

/// What to show of a failed run: the panic (message and assertion values), then the end of
/// the output (libFuzzer's summary and the artifact's path).
fn tail(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = text.lines().collect();
    let mut shown: Vec<String> = Vec::new();
    if let Some(at) = lines.iter().position(|l| l.contains("panicked at")) {
        // A message may hold a whole session's state: its first characters say enough.
        shown.extend(
            lines[at..]
                .iter()
                .take(6)
                .map(|l| l.chars().take(400).collect()),
        );
        shown.push("...".into());
    }
    shown.extend(
        lines[lines.len().saturating_sub(12)..]
            .iter()
            .map(|l| l.to_string()),
    );
    shown.join("\n")
}

fn build() -> Result<(), String> {
    let started = Instant::now();
    let out = cargo_fuzz(&["build", "--sanitizer", "none", "--target-dir", "target"])
        .output()
        .map_err(|e| format!("cargo fuzz build: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo fuzz build failed:\n{}", tail(&out)));
    }
    eprintln!(
        "fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Replays the target's regressions, then fuzzes it from its seeds for the set time.
fn fuzz(target: &str) {
    let _one_at_a_time = FUZZING.lock().unwrap_or_else(|e| e.into_inner());
    if !fuzzing_enabled() {
        return;
    }
    if let Err(e) = BUILT.get_or_init(build) {
        panic!("{e}");
    }
    let binary = fuzz_dir().join(format!("target/x86_64-unknown-linux-gnu/release/{target}"));
    let regressions: Vec<PathBuf> = std::fs::read_dir(fuzz_dir().join("regressions").join(target))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    if !regressions.is_empty() {
        let out = Command::new(&binary)
            .args(&regressions)
            .output()
            .expect("run the fuzz target on its regressions");
        assert!(
            out.status.success(),
            "{target}: a regression input crashes again:\n{}",
            tail(&out)
        );
    }
    let corpus = format!("corpus/{target}");
    std::fs::create_dir_all(fuzz_dir().join(&corpus)).expect("create the corpus folder");
    let seeds = format!("seeds/{target}");
    let time = format!("-max_total_time={}", seconds());
    let dict = format!("dicts/{target}.dict");
    let mut args = vec![
        "run",
        "--sanitizer",
        "none",
        "--target-dir",
        "target",
        target,
        &corpus,
        &seeds,
        "--",
        &time,
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ];
    let dict_arg = format!("-dict={dict}");
    if fuzz_dir().join(&dict).exists() {
        args.push(&dict_arg);
    }
    let out = cargo_fuzz(&args).output().expect("run cargo fuzz");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{target}: the fuzzer found a crash (the input is in fuzz/artifacts/{target}/; make it a \
         regression, CONTRIBUTING.md says how):\n{}",
        tail(&out)
    );
    let done = stderr
        .lines()
        .find(|l| l.contains("DONE"))
        .unwrap_or("(no DONE line)");
    eprintln!("{target}: {}", done.trim());
    assert!(
        done.contains("cov:"),
        "{target}: no coverage reported:\n{}",
        tail(&out)
    );
}

#[test]
fn fuzz_wire() {
    fuzz("wire");
}

#[test]
fn fuzz_pcap() {
    fuzz("pcap");
}

#[test]
fn fuzz_protocol() {
    fuzz("protocol");
}

#[test]
fn fuzz_http() {
    fuzz("http");
}

#[test]
fn fuzz_comparator() {
    fuzz("comparator");
}

#[test]
fn fuzz_heads() {
    fuzz("heads");
}

#[test]
fn fuzz_session() {
    fuzz("session");
}

#[test]
fn fuzz_dialect() {
    fuzz("dialect");
}
