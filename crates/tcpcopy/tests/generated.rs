//! Man pages, shell completions and example config files, generated from the same clap definitions
//! as `--help` and checked in (docs/man, completions, docs/examples): this test renders them again and fails on any difference,
//! so they cannot drift from the options. After changing an option, regenerate with
//! `UPDATE_GENERATED=1 cargo test -p tcpcopy --test generated` and commit the files.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use tcpcopy::cli::{InterceptCli, TcpcopyCli};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every generated file: its path in the repository and its contents now.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for (name, cmd) in [
        ("tcpcopy", TcpcopyCli::command()),
        ("intercept", InterceptCli::command()),
    ] {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .render(&mut page)
            .expect("man page renders");
        files.push((repo().join(format!("docs/man/{name}.1")), page));
        let mut built = cmd.clone();
        built.build();
        let example = tcpcopy::conffile::example(&built).into_bytes();
        files.push((repo().join(format!("docs/examples/{name}.toml")), example));
        for (shell, file) in [
            (Shell::Bash, format!("{name}.bash")),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), name, &mut out);
            files.push((repo().join("completions").join(file), out));
        }
    }
    files
}

#[test]
fn man_pages_and_completions_match_the_options() {
    let update = std::env::var_os("UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for (path, now) in generated() {
        if update {
            std::fs::write(&path, &now).expect("write the generated file");
            continue;
        }
        if std::fs::read(&path).ok().as_deref() != Some(&now[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (regenerate with UPDATE_GENERATED=1 cargo test -p tcpcopy --test generated): {stale:?}"
    );
}

#[test]
fn the_man_pages_document_every_option() {
    for (name, cmd) in [
        ("tcpcopy", TcpcopyCli::command()),
        ("intercept", InterceptCli::command()),
    ] {
        let page = std::fs::read_to_string(repo().join(format!("docs/man/{name}.1")))
            .expect("the man page is checked in");
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                // roff escapes the dashes.
                assert!(
                    page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                    "{name}.1 lacks --{long}"
                );
            }
        }
    }
}
