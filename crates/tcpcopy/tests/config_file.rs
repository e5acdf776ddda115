//! The config file (`--config FILE`) and `--print-config` of both programs: a file setting every
//! option gives the same configuration as the same options on the command line, the command line
//! overrides the file, the printed configuration loads back, the shipped examples hold every
//! option with its true default, and a bad file is one line and exit status 2. No root needed.
//!
//! The option list comes from clap: an option added to the programs without a sample value below
//! fails `every_option_in_a_file_equals_the_command_line`.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use clap::{Arg, Command, CommandFactory};

use tcpcopy::cli::{InterceptCli, TcpcopyCli, TcpcopyCommand};
use tcpcopy::conffile::{self, Parsed};

/// A valid, non-default value for every option of tcpcopy: the key, its TOML value, and the same
/// on the command line (no values for a flag, one per occurrence for a list).
const TCPCOPY: &[(&str, &str, &[&str])] = &[
    (
        "transfer",
        r#""80-198.18.0.30:80,8080-198.18.0.31:8080""#,
        &["80-198.18.0.30:80,8080-198.18.0.31:8080"],
    ),
    (
        "intercept",
        r#""198.18.0.40:36524,198.18.0.41""#,
        &["198.18.0.40:36524,198.18.0.41"],
    ),
    ("fake-client", r#""198.19.0.0/30""#, &["198.19.0.0/30"]),
    ("interface", r#""eth1""#, &["eth1"]),
    ("source", r#""eth2""#, &["eth2"]),
    ("input", r#""geneve:6082""#, &["geneve:6082"]),
    ("mirror-id", "[7, 8]", &["7", "8"]),
    ("accelerate", "2.5", &["2.5"]),
    ("max-gap", "0.5", &["0.5"]),
    (
        "record",
        r#""/tmp/capture.pcapng""#,
        &["/tmp/capture.pcapng"],
    ),
    ("session-timeout", "30", &["30"]),
    ("mss", "1400", &["1400"]),
    ("mtu", "9000", &["9000"]),
    ("rtt", "150", &["150"]),
    ("no-wait", "true", &[]),
    ("response-wait", "250", &["250"]),
    ("connections", "4", &["4"]),
    ("threads", "2", &["2"]),
    ("port", "36600", &["36600"]),
    ("copies", "3", &["3"]),
    ("port-shift", "2000", &["2000"]),
    ("percent", "50", &["50"]),
    ("memory", "256", &["256"]),
    (
        "log",
        r#""/var/log/tcpcopy.log""#,
        &["/var/log/tcpcopy.log"],
    ),
    ("pid-file", r#""/run/tcpcopy.pid""#, &["/run/tcpcopy.pid"]),
    ("debug", "true", &[]),
    ("log-format", r#""json""#, &["json"]),
    ("send-layer", r#""link""#, &["link"]),
    ("output-device", r#""eth3""#, &["eth3"]),
    ("capture-wait", "8", &["8"]),
    ("stats-interval", "5", &["5"]),
    ("duration", "60", &["60"]),
    ("compare", "true", &[]),
    ("compare-bytes", "512", &["512"]),
    (
        "ignore-header",
        r#"["X-Trace", "-Date"]"#,
        &["X-Trace", "-Date"],
    ),
    ("baseline", r#""198.18.0.50:80""#, &["198.18.0.50:80"]),
    ("report", r#""/tmp/report.json""#, &["/tmp/report.json"]),
    (
        "report-html",
        r#""/tmp/report.html""#,
        &["/tmp/report.html"],
    ),
    ("fail-on-diff", "1.5", &["1.5"]),
    ("fail-on-loss", "2", &["2"]),
    ("metrics", r#""127.0.0.1:9100""#, &["127.0.0.1:9100"]),
    ("skip-gaps", "500", &["500"]),
    ("loop", "3", &["3"]),
    ("idle-timeout", "20", &["20"]),
    ("instance", "2", &["2"]),
    ("only-full-sessions", "true", &[]),
    ("gradual", "true", &[]),
    ("localhost-as", r#""198.18.0.9""#, &["198.18.0.9"]),
    ("lonely", "true", &[]),
    ("capture-buffer", "32", &["32"]),
    ("daemon", "true", &[]),
    (
        "filter",
        r#""tcp and not host 198.18.0.7""#,
        &["tcp and not host 198.18.0.7"],
    ),
    (
        "secret-file",
        r#""/etc/tcpcopy/secret""#,
        &["/etc/tcpcopy/secret"],
    ),
    ("protocol", r#""mysql""#, &["mysql"]),
    ("login", r#"["app:pw", "ro:x"]"#, &["app:pw", "ro:x"]),
    (
        "login-file",
        r#""/etc/tcpcopy/logins""#,
        &["/etc/tcpcopy/logins"],
    ),
];

/// The same for intercept (its hidden testing option included).
const INTERCEPT: &[(&str, &str, &[&str])] = &[
    ("interface", r#""eth0,eth1""#, &["eth0,eth1"]),
    ("queue", "true", &[]),
    ("port", r#""80,8080""#, &["80,8080"]),
    ("queue-num", "3", &["3"]),
    ("listen-port", "36600", &["36600"]),
    ("bind", r#""198.18.0.30""#, &["198.18.0.30"]),
    (
        "allow",
        r#""198.18.0.20,198.18.0.21""#,
        &["198.18.0.20,198.18.0.21"],
    ),
    ("clock-offset-ms", "-3002", &["-3002"]),
    ("threads", "2", &["2"]),
    ("batch", "32", &["32"]),
    ("route-timeout", "60", &["60"]),
    ("hash-size", "65536", &["65536"]),
    ("metrics", r#""127.0.0.1:9101""#, &["127.0.0.1:9101"]),
    (
        "log",
        r#""/var/log/intercept.log""#,
        &["/var/log/intercept.log"],
    ),
    (
        "pid-file",
        r#""/run/intercept.pid""#,
        &["/run/intercept.pid"],
    ),
    ("debug", "true", &[]),
    ("log-format", r#""json""#, &["json"]),
    ("queue-length", "4096", &["4096"]),
    ("pass", r#""198.18.0.7""#, &["198.18.0.7"]),
    ("daemon", "true", &[]),
    (
        "filter",
        r#""tcp and not host 198.18.0.7""#,
        &["tcp and not host 198.18.0.7"],
    ),
    (
        "secret-file",
        r#""/etc/tcpcopy/secret""#,
        &["/etc/tcpcopy/secret"],
    ),
];

/// One program under test.
struct Program {
    name: &'static str,
    bin: &'static str,
    samples: &'static [(&'static str, &'static str, &'static [&'static str])],
    cmd: fn() -> Command,
}

const PROGRAMS: [Program; 2] = [
    Program {
        name: "tcpcopy",
        bin: env!("CARGO_BIN_EXE_tcpcopy"),
        samples: TCPCOPY,
        cmd: TcpcopyCli::command,
    },
    Program {
        name: "intercept",
        bin: env!("CARGO_BIN_EXE_intercept"),
        samples: INTERCEPT,
        cmd: InterceptCli::command,
    },
];

impl Program {
    fn built(&self) -> Command {
        let mut cmd = (self.cmd)();
        cmd.build();
        cmd
    }

    /// The configuration the library parses from this command line (argv[0] added), as Debug
    /// text without the config file options themselves.
    fn parsed(&self, args: &[String]) -> String {
        let argv: Vec<String> = std::iter::once(self.name.to_string())
            .chain(args.iter().cloned())
            .collect();
        if self.name == "tcpcopy" {
            match TcpcopyCommand::parse_from(&argv) {
                Ok(TcpcopyCommand::Live(cli)) => format!("{:?}", cli.opts),
                _ => panic!("tcpcopy refused {argv:?}"),
            }
        } else {
            match conffile::parse::<InterceptCli>(argv.iter().map(Into::into).collect()) {
                Ok(Parsed::Run(mut cli)) => {
                    cli.file = Default::default();
                    format!("{cli:?}")
                }
                _ => panic!("intercept refused {argv:?}"),
            }
        }
    }

    /// Runs the binary: exit status, stdout, stderr.
    fn run(&self, args: &[String]) -> (i32, String, String) {
        let out = Process::new(self.bin)
            .args(args)
            .output()
            .expect("binary runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `--print-config` through the binary, which must exit 0.
    fn print_config(&self, args: &[String]) -> String {
        let args = [args, &["--print-config".to_string()]].concat();
        let (code, out, err) = self.run(&args);
        assert_eq!(code, 0, "{} {args:?}: {err}", self.name);
        out
    }
}

/// How the command line names an option: its long name, or its letter when it has none.
fn flag(arg: &Arg) -> String {
    match arg.get_long() {
        Some(long) => format!("--{long}"),
        None => format!("-{}", arg.get_short().expect("an option has a name")),
    }
}

/// The command line giving one sample.
fn cli_of(cmd: &Command, key: &str, values: &[&str]) -> Vec<String> {
    let (_, arg) = conffile::configurable(cmd)
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("the sample table names '{key}', which is not an option"));
    if values.is_empty() {
        return vec![flag(arg)];
    }
    // A value starting with a dash (`-Date`) must be attached to its option on a command line.
    values
        .iter()
        .flat_map(|v| match v.starts_with('-') {
            true => vec![format!("{}={v}", flag(arg))],
            false => vec![flag(arg), v.to_string()],
        })
        .collect()
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tcpcopy-conf-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write the config file");
        path.to_str().expect("utf-8 temp path").to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_option_in_a_file_equals_the_command_line() {
    let scratch = Scratch::new("every");
    for p in &PROGRAMS {
        let cmd = p.built();
        let keys: Vec<String> = conffile::configurable(&cmd).map(|(k, _)| k).collect();
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| !p.samples.iter().any(|(s, _, _)| s == k))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: options without a sample value in tests/config_file.rs: {missing:?}",
            p.name
        );
        let defaults = p.parsed(&[]);
        let mut toml = String::new();
        let mut cli = Vec::new();
        for (key, value, values) in p.samples {
            let one = cli_of(&cmd, key, values);
            // A sample equal to the default would prove nothing.
            assert_ne!(
                p.parsed(&one),
                defaults,
                "{}: the sample of {key} is the default",
                p.name
            );
            toml.push_str(&format!("{key} = {value}\n"));
            cli.extend(one);
        }
        let file = scratch.file(&format!("{}.toml", p.name), &toml);
        let from_file = p.parsed(&strings(&["--config", &file]));
        assert_eq!(
            from_file,
            p.parsed(&cli),
            "{}: file and command line differ",
            p.name
        );
        // The binaries agree, through --print-config.
        assert_eq!(
            p.print_config(&strings(&["--config", &file])),
            p.print_config(&cli),
            "{}",
            p.name
        );
    }
}

#[test]
fn the_command_line_overrides_the_file() {
    let scratch = Scratch::new("override");
    let tcpcopy = &PROGRAMS[0];
    let file = scratch.file(
        "t.toml",
        "copies = 3\nno-wait = true\nignore-header = [\"X-A\"]\nsend-layer = \"link\"\n",
    );
    let text = tcpcopy.print_config(&strings(&[
        "--copies",
        "5",
        "--config",
        &file,
        "--ignore-header",
        "X-B",
    ]));
    for line in [
        "copies = 5\n",
        "ignore-header = [\"X-B\"]\n",
        "no-wait = true\n",
        "send-layer = \"link\"\n",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    let intercept = &PROGRAMS[1];
    let file = scratch.file("i.toml", "batch = 32\nbind = \"198.18.0.30\"\n");
    let text = intercept.print_config(&strings(&["--config", &file, "--batch", "8"]));
    assert!(
        text.contains("batch = 8\n") && text.contains("bind = \"198.18.0.30\"\n"),
        "{text}"
    );
}

#[test]
fn the_printed_configuration_loads_back_to_the_same() {
    let scratch = Scratch::new("print");
    for p in &PROGRAMS {
        let cmd = p.built();
        let cli: Vec<String> = p
            .samples
            .iter()
            .flat_map(|(key, _, values)| cli_of(&cmd, key, values))
            .collect();
        for args in [Vec::new(), cli] {
            let printed = p.print_config(&args);
            let file = scratch.file(&format!("{}.toml", p.name), &printed);
            let back = strings(&["--config", &file]);
            assert_eq!(p.parsed(&back), p.parsed(&args), "{}: {printed}", p.name);
            assert_eq!(p.print_config(&back), printed, "{}", p.name);
        }
    }
}

#[test]
fn the_examples_hold_every_option_with_its_default() {
    let scratch = Scratch::new("examples");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for p in &PROGRAMS {
        let example = std::fs::read_to_string(repo.join(format!("docs/examples/{}.toml", p.name)))
            .expect("the example is checked in");
        let cmd = p.built();
        for (key, arg) in conffile::configurable(&cmd).filter(|(_, a)| !a.is_hide_set()) {
            assert!(
                example.contains(&format!("\n# {key} = ")),
                "{}.toml lacks {key} ({})",
                p.name,
                flag(arg)
            );
        }
        // Every value shown, uncommented, is the default: loading them changes nothing.
        let uncommented: String = example
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ").is_some_and(|(k, v)| {
                    v != "(not set)" && conffile::configurable(&cmd).any(|(key, _)| key == k)
                })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let file = scratch.file(&format!("{}.toml", p.name), &uncommented);
        assert_eq!(
            p.print_config(&strings(&["--config", &file])),
            p.print_config(&[]),
            "{}",
            p.name
        );
        // The example as shipped loads as it is.
        let shipped = repo.join(format!("docs/examples/{}.toml", p.name));
        let shipped = strings(&["--config", shipped.to_str().unwrap()]);
        assert_eq!(p.parsed(&shipped), p.parsed(&[]), "{}", p.name);
    }
}

#[test]
fn a_bad_file_is_one_line_naming_file_key_and_expectation_and_exit_2() {
    let scratch = Scratch::new("bad");
    for p in &PROGRAMS {
        let cases: [(&str, &str, &[&str]); 5] = [
            (
                "unknown",
                "debug = true\n\nno-such-option = 1\n",
                &[":3:", "no-such-option", "unknown key"],
            ),
            (
                "type",
                "threads = \"two\"\n",
                &[":1:", "threads", "expected an integer, found string"],
            ),
            (
                "value",
                "\nthreads = 0\n",
                &[":2:", "threads", "invalid value '0'"],
            ),
            (
                "refused",
                "print-config = true\n",
                &[":1:", "print-config", "not allowed"],
            ),
            ("syntax", "threads = [\n", &[":1:", "not valid TOML"]),
        ];
        for (name, text, wanted) in cases {
            let file = scratch.file(&format!("{}-{name}.toml", p.name), text);
            let (code, out, err) = p.run(&strings(&["--config", &file]));
            assert_eq!(code, 2, "{} {name}: {err}", p.name);
            assert!(out.is_empty(), "{} {name}: {out}", p.name);
            assert_eq!(
                err.trim_end().lines().count(),
                1,
                "{} {name}: {err}",
                p.name
            );
            assert!(
                err.starts_with(&format!("{}: {file}", p.name)),
                "{} {name}: {err}",
                p.name
            );
            for w in wanted {
                assert!(err.contains(w), "{} {name}: {w:?} in {err}", p.name);
            }
        }
        let missing = scratch.0.join("missing.toml");
        let (code, _, err) = p.run(&strings(&["--config", missing.to_str().unwrap()]));
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("missing.toml: cannot read the config file"),
            "{err}"
        );
    }
}
