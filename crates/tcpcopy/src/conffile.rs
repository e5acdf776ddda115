//! The config file of both programs (`--config FILE`, TOML) and `--print-config`.
//!
//! This module owns the translation between a TOML file and command-line tokens, both ways: every
//! key is one of clap's own options under its long name (the arg id for an option with only a
//! letter), taken from [`Command::get_arguments`], so an option added to [`crate::cli`] is
//! configurable, printed and documented without touching this file. It knows no option by name
//! except the four that make no sense in a file ([`REFUSED`]).
//!
//! Loading: each key is checked against its option (its TOML type, then clap's own value parser)
//! and becomes `--key=value` tokens placed before the real command line, which clap then parses
//! as usual. An option that the command line gives is not taken from the file at all, so the
//! command line overrides the file, lists included (`--ignore-header` on the command line replaces
//! the file's list instead of adding to it). A flag is `true` or `false` in the file; `false`
//! simply leaves it out, and the command line cannot switch off a flag the file sets.
//!
//! Printing: the effective values (file, command line and defaults, as clap holds them before
//! conversion) are written back as a file that `--config` accepts.
//!
//! Every refused file produces one line naming the file, the line, the key and what is expected.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::builder::ValueParser;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, Parser};
use toml::de::{DeTable, DeValue};

/// Long options that cannot be keys: they are about the invocation, not the configuration.
pub const REFUSED: [&str; 4] = ["help", "version", "config", "print-config"];

/// The long name of the option naming the config file.
const CONFIG: &str = "config";
/// The long name of the option asking for the effective configuration.
const PRINT_CONFIG: &str = "print-config";

/// What a command line with a config file came to.
#[derive(Debug)]
pub enum Parsed<P> {
    /// The options, file and command line merged: run with them.
    Run(P),
    /// `--print-config`: this text (TOML), to be printed instead of running.
    Print(String),
}

/// Why a command line with a config file was refused (or, for help and version, answered).
#[derive(Debug)]
pub enum ParseError {
    Clap(clap::Error),
    File(FileError),
}

/// A refused config file: one line, `FILE[:LINE]: what`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for FileError {}

/// The TOML type an option's value has in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Integer,
    /// A number: integers are accepted too.
    Float,
    String,
}

impl Kind {
    fn of(parser: &ValueParser) -> Kind {
        use std::any::TypeId;
        let id = parser.type_id();
        let is = |t: TypeId| id == t;
        if is(TypeId::of::<bool>()) {
            Kind::Bool
        } else if [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<isize>(),
        ]
        .into_iter()
        .any(is)
        {
            Kind::Integer
        } else if is(TypeId::of::<f64>()) || is(TypeId::of::<f32>()) {
            Kind::Float
        } else {
            Kind::String
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Bool => "true or false",
            Kind::Integer => "an integer",
            Kind::Float => "a number",
            Kind::String => "a string",
        }
    }
}

/// How an option is written in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A flag: `true` sets it.
    Flag,
    /// One value.
    One(Kind),
    /// An array of values (an option given several times).
    List(Kind),
}

impl Shape {
    fn of(arg: &Arg) -> Option<Shape> {
        match arg.get_action() {
            ArgAction::SetTrue => Some(Shape::Flag),
            ArgAction::Set => Some(Shape::One(Kind::of(arg.get_value_parser()))),
            ArgAction::Append => Some(Shape::List(Kind::of(arg.get_value_parser()))),
            _ => None,
        }
    }

    fn expected(self) -> String {
        match self {
            Shape::Flag => "true or false".into(),
            Shape::One(kind) => kind.expected().into(),
            Shape::List(kind) => format!("an array of {}", plural(kind)),
        }
    }
}

fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "booleans",
        Kind::Integer => "integers",
        Kind::Float => "numbers",
        Kind::String => "strings",
    }
}

/// The file key of an option: its long name, or its id when it only has a letter; none for a
/// positional argument.
pub fn key(arg: &Arg) -> Option<String> {
    if arg.is_positional() {
        return None;
    }
    Some(match arg.get_long() {
        Some(long) => long.to_string(),
        None => arg.get_id().to_string(),
    })
}

/// The options a file may set, in `--help` order, with their keys (hidden ones included).
/// `cmd` must be built ([`Command::build`]).
pub fn configurable(cmd: &Command) -> impl Iterator<Item = (String, &Arg)> {
    cmd.get_arguments().filter_map(|arg| {
        let key = key(arg)?;
        // A hidden option with only a letter is there for C TCPCopy's command lines alone.
        let c_letter_only = arg.is_hide_set() && arg.get_long().is_none();
        let usable = !REFUSED.contains(&key.as_str()) && !c_letter_only && Shape::of(arg).is_some();
        usable.then_some((key, arg))
    })
}

/// The token that names `arg` on a command line, ready for `=value`.
fn flag_token(arg: &Arg) -> String {
    match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => format!("--{long}"),
        (None, Some(short)) => format!("-{short}"),
        // configurable() only yields options, which have a long name or a letter.
        (None, None) => unreachable!("an option without a name"),
    }
}

/// Reads the file at `path` into command-line tokens, per option (keyed by arg id), each key
/// checked against its option. `cmd` must be built.
pub fn load(cmd: &Command, path: &Path) -> Result<Vec<(String, Vec<OsString>)>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        file: path.to_path_buf(),
        line: None,
        message: format!("cannot read the config file: {e}"),
    })?;
    tokens(cmd, path, &text)
}

/// [`load`] on the file's text.
pub fn tokens(
    cmd: &Command,
    path: &Path,
    text: &str,
) -> Result<Vec<(String, Vec<OsString>)>, FileError> {
    let fail = |span: Option<std::ops::Range<usize>>, message: String| FileError {
        file: path.to_path_buf(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let table = DeTable::parse(text)
        .map_err(|e| fail(e.span(), format!("not valid TOML: {}", e.message().trim())))?;
    let mut out = Vec::new();
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (key, value) in entries {
        let name: &str = key.get_ref();
        let at = Some(key.span());
        if REFUSED.contains(&name) {
            return Err(fail(at, format!("{name}: not allowed in a config file")));
        }
        let Some((_, arg)) = configurable(cmd).find(|(k, _)| k == name) else {
            return Err(fail(
                at,
                format!(
                    "unknown key '{name}' (the keys are {}'s long option names, see --print-config)",
                    cmd.get_name()
                ),
            ));
        };
        let shape = Shape::of(arg).expect("configurable() keeps only options with a shape");
        let tokens = to_tokens(arg, shape, value.get_ref())
            .map_err(|why| fail(Some(value.span()), format!("{name}: {why}")))?;
        out.push((arg.get_id().to_string(), tokens));
    }
    Ok(out)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The command-line tokens for one key's value, or what was expected instead.
fn to_tokens(arg: &Arg, shape: Shape, value: &DeValue<'_>) -> Result<Vec<OsString>, String> {
    let found = || format!("expected {}, found {}", shape.expected(), value.type_str());
    match shape {
        Shape::Flag => match value.as_bool() {
            Some(true) => Ok(vec![flag_token(arg).into()]),
            Some(false) => Ok(Vec::new()),
            None => Err(found()),
        },
        Shape::One(kind) => {
            let raw = scalar(kind, value).ok_or_else(found)?;
            check(arg, &raw)?;
            Ok(vec![format!("{}={raw}", flag_token(arg)).into()])
        }
        Shape::List(kind) => {
            let items = value.as_array().ok_or_else(found)?;
            let mut tokens = Vec::new();
            for item in items.iter() {
                let raw = scalar(kind, item.get_ref()).ok_or_else(found)?;
                check(arg, &raw)?;
                tokens.push(format!("{}={raw}", flag_token(arg)).into());
            }
            Ok(tokens)
        }
    }
}

/// The command-line text of a TOML scalar of the expected kind.
fn scalar(kind: Kind, value: &DeValue<'_>) -> Option<String> {
    let integer = |v: &DeValue<'_>| {
        let i = v.as_integer()?;
        i128::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n.to_string())
    };
    match kind {
        Kind::Bool => value.as_bool().map(|b| b.to_string()),
        Kind::Integer => integer(value),
        Kind::Float => integer(value).or_else(|| value.as_float().map(|f| f.as_str().to_string())),
        Kind::String => value.as_str().map(str::to_string),
    }
}

/// Runs clap's own value parser on one value (through a one-option command, as clap does not
/// expose parsers on their own), so that a bad value is refused with the file's name and line
/// rather than as if it came from the command line.
fn check(arg: &Arg, raw: &str) -> Result<(), String> {
    let probe = Command::new("config").no_binary_name(true).arg(
        Arg::new("value")
            .long("value")
            .action(ArgAction::Set)
            .value_parser(arg.get_value_parser().clone()),
    );
    let Err(e) = probe.try_get_matches_from([format!("--value={raw}")]) else {
        return Ok(());
    };
    let mut why = match std::error::Error::source(&e) {
        Some(reason) => format!("invalid value '{raw}': {reason}"),
        None => format!("invalid value '{raw}'"),
    };
    let possible = possible_values(arg);
    if !possible.is_empty() {
        why.push_str(&format!(" (expected one of: {})", possible.join(", ")));
    }
    Err(why)
}

fn possible_values(arg: &Arg) -> Vec<String> {
    arg.get_possible_values()
        .iter()
        .filter(|p| !p.is_hide_set())
        .map(|p| p.get_name().to_string())
        .collect()
}

/// The id of the option with this long name, if the command has it.
fn id_of(cmd: &Command, long: &str) -> Option<String> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .map(|a| a.get_id().to_string())
}

/// Parses `args` (`argv[0]` first) as `P`'s options, reading `--config FILE` first when `P` has
/// that option, and answering `--print-config` with the effective configuration. Without these
/// options (a command that does not take them) this is clap's `try_parse_from`.
pub fn parse<P: Parser>(args: Vec<OsString>) -> Result<Parsed<P>, ParseError> {
    let mut cmd = P::command();
    cmd.build();
    let mut full = args.clone();
    if let Some(config_id) = id_of(&cmd, CONFIG) {
        // A first, lenient pass finds the file and what the command line gives (errors, help and
        // version are left to the real pass below).
        if let Ok(first) = cmd.clone().ignore_errors(true).try_get_matches_from(&args) {
            let file = first
                .get_raw(&config_id)
                .and_then(|mut v| v.next_back())
                .map(PathBuf::from);
            if let Some(file) = file {
                let given = given_on_command_line(&first);
                let from_file = load(&cmd, &file).map_err(ParseError::File)?;
                let tokens = from_file
                    .into_iter()
                    .filter(|(id, _)| !given.contains(id))
                    .flat_map(|(_, tokens)| tokens);
                full = args.iter().take(1).cloned().chain(tokens).collect();
                full.extend(args.iter().skip(1).cloned());
            }
        }
    }
    let matches = cmd
        .try_get_matches_from_mut(full)
        .map_err(ParseError::Clap)?;
    let print = id_of(&cmd, PRINT_CONFIG).is_some_and(|id| matches.get_flag(&id));
    if print {
        return Ok(Parsed::Print(effective(&cmd, &matches)));
    }
    P::from_arg_matches(&matches)
        .map(Parsed::Run)
        .map_err(|e| ParseError::Clap(e.format(&mut cmd)))
}

fn given_on_command_line(matches: &ArgMatches) -> HashSet<String> {
    matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect()
}

/// The effective configuration as a config file: every option that can be a key (hidden ones
/// too), with its value from the file, the command line or its default; an option with no value
/// is a comment. `cmd` must be built and `matches` come from it.
pub fn effective(cmd: &Command, matches: &ArgMatches) -> String {
    let mut out = format!(
        "# {} options in effect (--print-config); `--config FILE` reads this back.\n",
        cmd.get_name()
    );
    for (key, arg) in configurable(cmd) {
        let raw: Option<Vec<String>> = matches
            .get_raw(arg.get_id().as_str())
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect());
        out.push('\n');
        out.push_str(&describe(arg));
        out.push_str(&assignment(&key, arg, raw.as_deref(), false));
    }
    out
}

/// An example config file: every documented option with its help as a comment, set to its
/// default but commented out. `cmd` must be built.
pub fn example(cmd: &Command) -> String {
    let mut out = format!(
        "# Example config file for {name}: `{name} --config FILE`. Every option of `{name} --help`\n\
         # can be set here under its long name; the command line overrides the file, and\n\
         # `{name} --print-config` prints the options in effect in this form. Each option below\n\
         # is commented out and shows its default.\n",
        name = cmd.get_name()
    );
    for (key, arg) in configurable(cmd).filter(|(_, a)| !a.is_hide_set()) {
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let raw = (!defaults.is_empty()).then_some(defaults);
        out.push('\n');
        out.push_str(&describe(arg));
        out.push_str(&assignment(&key, arg, raw.as_deref(), true));
    }
    out
}

/// The option's help (and possible values) as comment lines, wrapped.
fn describe(arg: &Arg) -> String {
    let mut text = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let possible = possible_values(arg);
    if !possible.is_empty() && Shape::of(arg) != Some(Shape::Flag) {
        text.push_str(&format!(" [possible values: {}]", possible.join(", ")));
    }
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 100 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    if line.len() > 1 {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `key = value` (commented out when asked, or when there is no value).
fn assignment(key: &str, arg: &Arg, raw: Option<&[String]>, commented: bool) -> String {
    let shape = Shape::of(arg).expect("configurable() keeps only options with a shape");
    let value = match (shape, raw) {
        (Shape::Flag, Some([v, ..])) => Some(v.clone()),
        (Shape::Flag, _) => Some("false".into()),
        (Shape::One(kind), Some([.., v])) => Some(toml_value(kind, v)),
        (Shape::One(_), _) => None,
        (Shape::List(kind), raw) => Some(format!(
            "[{}]",
            raw.unwrap_or_default()
                .iter()
                .map(|v| toml_value(kind, v))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    };
    match value {
        Some(v) if !commented => format!("{key} = {v}\n"),
        Some(v) => format!("# {key} = {v}\n"),
        None => format!("# {key} = (not set)\n"),
    }
}

/// A command-line value as a TOML value of the option's kind.
fn toml_value(kind: Kind, raw: &str) -> String {
    match kind {
        Kind::Bool if raw == "true" || raw == "false" => raw.to_string(),
        Kind::Integer => match raw.parse::<i128>() {
            Ok(n) => n.to_string(),
            Err(_) => quote(raw),
        },
        Kind::Float => match raw.parse::<f64>() {
            Ok(v) if v.is_nan() => "nan".into(),
            Ok(v) if v.is_infinite() => if v > 0.0 { "inf" } else { "-inf" }.into(),
            // Debug always writes a TOML float: `1.0`, `0.25`, `1e300`.
            Ok(v) => format!("{v:?}"),
            Err(_) => quote(raw),
        },
        _ => quote(raw),
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// A small program with one option of each shape the file knows.
    #[derive(Debug, Parser)]
    #[command(name = "probe")]
    struct Probe {
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100))]
        copies: u16,
        #[arg(long, default_value_t = 1.0)]
        accelerate: f64,
        #[arg(long)]
        no_wait: bool,
        #[arg(long = "ignore-header")]
        ignore_header: Vec<String>,
        #[arg(short = 'i')]
        input: Option<String>,
        #[arg(long, value_enum, default_value_t = Layer::Ip)]
        layer: Layer,
        #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
        offset: i64,
        #[command(flatten)]
        file: crate::cli::ConfigFileOpts,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
    enum Layer {
        Ip,
        Link,
    }

    /// A program without the config file options.
    #[derive(Debug, Parser)]
    struct Plain {
        #[arg(long)]
        copies: Option<u16>,
    }

    fn built() -> Command {
        let mut cmd = Probe::command();
        cmd.build();
        cmd
    }

    fn file_tokens(text: &str) -> Result<Vec<String>, FileError> {
        Ok(tokens(&built(), Path::new("p.toml"), text)?
            .into_iter()
            .flat_map(|(_, t)| t)
            .map(|t| t.to_string_lossy().into_owned())
            .collect())
    }

    fn error(text: &str) -> String {
        file_tokens(text).unwrap_err().to_string()
    }

    /// A config file in the temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!("conffile-{}-{name}", std::process::id()));
            std::fs::write(&path, text).expect("write the temporary config file");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn run(args: &[&str]) -> Probe {
        let args = std::iter::once("probe").chain(args.iter().copied());
        match parse::<Probe>(args.map(OsString::from).collect()) {
            Ok(Parsed::Run(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    fn print(args: &[&str]) -> String {
        let args = std::iter::once("probe").chain(args.iter().copied());
        match parse::<Probe>(args.map(OsString::from).collect()) {
            Ok(Parsed::Print(text)) => text,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_become_tokens_of_their_options() {
        let tokens = file_tokens(
            "copies = 3\naccelerate = 2\nno-wait = true\nignore-header = [\"X-A\", \"X-B\"]\n\
             input = \"eth0\"\nlayer = \"link\"\noffset = -3002\n",
        )
        .unwrap();
        assert_eq!(
            tokens,
            [
                "--copies=3",
                "--accelerate=2",
                "--no-wait",
                "--ignore-header=X-A",
                "--ignore-header=X-B",
                "-i=eth0",
                "--layer=link",
                "--offset=-3002",
            ]
        );
        assert_eq!(
            file_tokens("no-wait = false\naccelerate = 0.5\ncopies = 0x10").unwrap(),
            ["--accelerate=0.5", "--copies=16"]
        );
    }

    #[test]
    fn refused_files_name_the_file_line_key_and_expectation() {
        assert_eq!(
            error("copies = 2\n\ncopys = 3\n"),
            "p.toml:3: unknown key 'copys' (the keys are probe's long option names, see --print-config)"
        );
        assert_eq!(
            error("copies = \"three\""),
            "p.toml:1: copies: expected an integer, found string"
        );
        assert_eq!(
            error("\ncopies = 0"),
            "p.toml:2: copies: invalid value '0': 0 is not in 1..=100"
        );
        assert_eq!(
            error("layer = \"mac\""),
            "p.toml:1: layer: invalid value 'mac' (expected one of: ip, link)"
        );
        assert_eq!(
            error("no-wait = 1"),
            "p.toml:1: no-wait: expected true or false, found integer"
        );
        assert_eq!(
            error("ignore-header = \"X-A\""),
            "p.toml:1: ignore-header: expected an array of strings, found string"
        );
        assert_eq!(
            error("copies = 2.5"),
            "p.toml:1: copies: expected an integer, found float"
        );
        for key in REFUSED {
            assert_eq!(
                error(&format!("{key} = true")),
                format!("p.toml:1: {key}: not allowed in a config file")
            );
        }
        assert!(error("copies = [").starts_with("p.toml:1: not valid TOML: "));
        let missing = load(&built(), Path::new("/nonexistent/p.toml")).unwrap_err();
        assert_eq!(missing.line, None);
        assert!(missing
            .to_string()
            .starts_with("/nonexistent/p.toml: cannot read"));
        assert!(!missing.to_string().contains('\n'));
    }

    #[test]
    fn the_command_line_overrides_the_file_lists_included() {
        let file = TempFile::new(
            "override.toml",
            "copies = 3\nno-wait = true\nignore-header = [\"X-A\"]\nlayer = \"link\"\n",
        );
        let path = file.0.to_str().unwrap();
        let p = run(&["--copies", "5", "--config", path, "--ignore-header", "X-B"]);
        assert_eq!(p.copies, 5);
        assert_eq!(p.ignore_header, ["X-B"]);
        assert!(p.no_wait);
        assert_eq!(p.layer, Layer::Link);
        // Without the command line, the file's values.
        let p = run(&["--config", path]);
        assert_eq!(
            (p.copies, &p.ignore_header[..]),
            (3, &["X-A".to_string()][..])
        );
    }

    #[test]
    fn printed_configuration_loads_back_to_the_same() {
        let args = [
            "--copies",
            "7",
            "--accelerate",
            "0.25",
            "--no-wait",
            "--ignore-header",
            "X \"q\"",
            "--ignore-header",
            "B\\s",
            "-i",
            "eth1",
            "--layer",
            "link",
            "--offset",
            "-5",
        ];
        let text = print(&[&args[..], &["--print-config"]].concat());
        assert!(text.contains("copies = 7\n"), "{text}");
        assert!(text.contains("accelerate = 0.25\n"), "{text}");
        assert!(
            text.contains("ignore-header = [\"X \\\"q\\\"\", \"B\\\\s\"]\n"),
            "{text}"
        );
        assert!(!text.contains("config ="), "{text}");
        let file = TempFile::new("printed.toml", &text);
        let path = file.0.to_str().unwrap();
        let mut loaded = run(&["--config", path]);
        loaded.file = Default::default();
        assert_eq!(format!("{loaded:?}"), format!("{:?}", run(&args)));
        assert_eq!(print(&["--config", path, "--print-config"]), text);
        // Defaults are printed too, and an unset option is a comment.
        let defaults = print(&["--print-config"]);
        assert!(defaults.contains("copies = 1\n") && defaults.contains("accelerate = 1.0\n"));
        assert!(
            defaults.contains("no-wait = false\n") && defaults.contains("ignore-header = []\n")
        );
        assert!(defaults.contains("# input = (not set)\n"), "{defaults}");
    }

    #[test]
    fn the_example_shows_every_option_commented_out_with_its_default() {
        let example = example(&built());
        for line in [
            "# copies = 1\n",
            "# accelerate = 1.0\n",
            "# no-wait = false\n",
            "# ignore-header = []\n",
            "# input = (not set)\n",
            "# layer = \"ip\"\n",
        ] {
            assert!(example.contains(line), "{line:?} in:\n{example}");
        }
        assert!(example.contains("[possible values: ip, link]"));
        assert!(example.lines().all(|l| l.is_empty() || l.starts_with('#')));
    }

    #[test]
    fn a_command_without_the_options_parses_as_before() {
        let p = parse::<Plain>(["plain", "--copies", "2"].map(OsString::from).to_vec());
        assert!(matches!(p, Ok(Parsed::Run(Plain { copies: Some(2) }))));
        let e = parse::<Plain>(["plain", "--config", "x"].map(OsString::from).to_vec());
        assert!(matches!(e, Err(ParseError::Clap(_))));
    }

    #[test]
    fn values_are_written_as_toml() {
        assert_eq!(toml_value(Kind::Float, "1"), "1.0");
        assert_eq!(toml_value(Kind::Float, "1e300"), "1e300");
        assert_eq!(toml_value(Kind::Float, "inf"), "inf");
        assert_eq!(toml_value(Kind::Integer, "-3"), "-3");
        assert_eq!(toml_value(Kind::Bool, "true"), "true");
        assert_eq!(
            toml_value(Kind::String, "a\"b\\c\u{1}"),
            "\"a\\\"b\\\\c\\u0001\""
        );
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
