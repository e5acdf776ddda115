//! The HTML report in a real browser: headless Chromium opens the page, its console must stay
//! silent (script errors and blocked fetches are logged there), its script must finish, and its
//! screenshot must show the plots in their series colours.
//!
//! Needs `/usr/bin/chromium`; without it the tests are skipped, unless `TCPCOPY_REQUIRE_CHROMIUM`
//! is set (CI), where a missing browser fails them.

mod fixture;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use compare::html::{render, BASELINE_COLOUR, ONLINE_COLOUR, TARGET_COLOUR};

const CHROMIUM: &str = "/usr/bin/chromium";
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 2000;

/// What the browser made of a page.
struct Visit {
    /// Console messages (every one is a failure: the page logs nothing itself).
    console: Vec<String>,
    /// The DOM after the page's script ran.
    dom: String,
    screenshot: Screenshot,
}

struct Screenshot {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

impl Screenshot {
    fn decode(bytes: &[u8]) -> Screenshot {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().expect("screenshot is a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("screenshot size fits")];
        let info = reader.next_frame(&mut buf).expect("screenshot decodes");
        assert_eq!(info.bit_depth, png::BitDepth::Eight, "8-bit screenshot");
        let (width, height) = (info.width as usize, info.height as usize);
        let step = info.line_size / width;
        assert!(
            step >= 3,
            "RGB or RGBA screenshot, got {:?}",
            info.color_type
        );
        let rgb = (0..height)
            .flat_map(|y| (0..width).map(move |x| (y, x)))
            .map(|(y, x)| {
                let p = &buf[y * info.line_size + x * step..];
                [p[0], p[1], p[2]]
            })
            .collect();
        Screenshot { width, height, rgb }
    }

    /// Pixels of `colour` (`#rrggbb`, each channel within 12), and how many columns hold one.
    fn count(&self, colour: &str) -> (usize, usize) {
        let want: Vec<u8> = (0..3)
            .map(|i| u8::from_str_radix(&colour[1 + 2 * i..3 + 2 * i], 16).unwrap())
            .collect();
        let near = |p: &[u8; 3]| p.iter().zip(&want).all(|(a, b)| a.abs_diff(*b) <= 12);
        let mut columns = vec![false; self.width];
        let mut pixels = 0;
        for (i, p) in self.rgb.iter().enumerate() {
            if near(p) {
                pixels += 1;
                columns[i % self.width] = true;
            }
        }
        (pixels, columns.iter().filter(|&&c| c).count())
    }
}

/// Whether the browser is here; panics when CI requires it and it is missing.
fn chromium_present() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    if std::env::var_os("TCPCOPY_REQUIRE_CHROMIUM").is_some() {
        panic!("{CHROMIUM} is missing and TCPCOPY_REQUIRE_CHROMIUM is set");
    }
    eprintln!("SKIPPED: {CHROMIUM} not found (apt-get install chromium; set TCPCOPY_REQUIRE_CHROMIUM to fail instead)");
    false
}

/// Opens `page` in a fresh headless Chromium profile; keeps the screenshot as `name`.png in
/// the target's temp dir, for a person to look at.
fn visit(page: &str, name: &str) -> Visit {
    let dir = tempfile::tempdir().expect("temp dir");
    let html = dir.path().join("report.html");
    let shot = dir.path().join("shot.png");
    fs::write(&html, page).expect("write page");
    let out = fs::File::create(dir.path().join("stdout")).unwrap();
    let err = fs::File::create(dir.path().join("stderr")).unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(status.success(), "chromium failed ({status}):\n{stderr}");
    let png = fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}):\n{stderr}"));
    let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
    let _ = fs::write(&keep, &png);
    let _ = fs::write(keep.with_extension("html"), page);
    eprintln!("screenshot: {}", keep.display());
    Visit {
        console: stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(String::from)
            .collect(),
        dom: fs::read_to_string(dir.path().join("stdout")).unwrap(),
        screenshot: Screenshot::decode(&png),
    }
}

fn ready(dom: &str) -> bool {
    dom.contains("data-ready=\"1\"")
}

#[test]
fn the_page_is_self_contained_and_shows_captured_bytes_as_text() {
    let page = render(&fixture::full());
    // One script (the page's own), no fetch of any kind; the only URL is the SVG namespace.
    assert_eq!(page.matches("<script").count(), 1);
    for needle in ["src=", "@import", "url(", "<link rel=\"stylesheet"] {
        assert!(!page.contains(needle), "page holds {needle}");
    }
    let urls = page.matches("http://").count() + page.matches("https://").count();
    assert_eq!(
        urls,
        page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    assert!(
        page.contains("default-src 'none'"),
        "no Content-Security-Policy"
    );
    // Captured bytes and host names are escaped wherever they appear.
    assert!(!page.contains("thisMustNeverRun()</script>"));
    assert!(page.contains(
        "&lt;script&gt;thisMustNeverRun()&lt;/script&gt;&lt;/pre&gt;&quot;&#39;&amp;amp;\u{2401}"
    ));
    assert!(page.contains("web-1 &lt;prod&gt;"));
    // The logins (--protocol), with their causes.
    assert!(page.contains("<h3>Logins (mysql)</h3>"));
    assert!(page.contains("<tr><td>refused by the target</td><td class=\"n\">2</td></tr>"));
    // Every group and every per-request row is there.
    let r = fixture::full();
    for g in r.differences.iter().chain(&r.noise) {
        assert!(
            page.contains(&format!("<code>{}</code>", escape(&g.request))),
            "{}",
            g.request
        );
    }
    for g in &r.latency.by_request {
        assert!(
            page.contains(&format!("<code>{}</code>", escape(&g.request))),
            "{}",
            g.request
        );
    }
}

#[test]
fn a_minimal_page_says_what_is_missing() {
    let page = render(&fixture::minimal());
    for text in [
        "No timeline in this report.",
        "No latency was measured.",
        "Answers were not compared",
        "No per-request latency in this report.",
    ] {
        assert!(page.contains(text), "missing: {text}");
    }
    assert!(!page.contains("<svg"), "a plot without data");
    assert!(!page.contains("Logins"), "logins without a protocol");
}

/// The escaping the page must use for text (independent of the renderer's own).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
        .replace('\u{1}', "\u{2401}")
}

#[test]
fn full_report_opens_without_console_errors_and_shows_its_plots() {
    if !chromium_present() {
        return;
    }
    let v = visit(&render(&fixture::full()), "report-full");
    assert!(
        v.console.is_empty(),
        "console messages:\n{}",
        v.console.join("\n")
    );
    assert!(ready(&v.dom), "the page's script did not finish");
    // Captured bytes stay text: the hostile sample is shown, never run.
    assert!(
        v.dom.contains("&lt;script&gt;thisMustNeverRun()"),
        "hostile sample not shown as text"
    );
    assert!(
        !v.dom.contains("<script>thisMustNeverRun"),
        "hostile sample became markup"
    );
    let s = &v.screenshot;
    assert_eq!((s.width, s.height), (WIDTH as usize, HEIGHT as usize));
    for (side, colour, min_pixels, min_columns) in [
        ("online", ONLINE_COLOUR, 2000, 600),
        ("target", TARGET_COLOUR, 2000, 600),
        ("baseline", BASELINE_COLOUR, 600, 250),
    ] {
        let (pixels, columns) = s.count(colour);
        eprintln!("{side}: {pixels} pixels in {columns} columns");
        assert!(
            pixels >= min_pixels && columns >= min_columns,
            "{side} series ({colour}) barely visible: {pixels} pixels in {columns} columns"
        );
    }
}

#[test]
fn minimal_report_opens_cleanly_and_draws_no_series() {
    if !chromium_present() {
        return;
    }
    let v = visit(&render(&fixture::minimal()), "report-minimal");
    assert!(
        v.console.is_empty(),
        "console messages:\n{}",
        v.console.join("\n")
    );
    assert!(ready(&v.dom), "the page's script did not finish");
    assert!(v.dom.contains("No timeline in this report."));
    assert!(v.dom.contains("Answers were not compared"));
    // The colour counts above come from the plots: with no data there are none.
    for colour in [ONLINE_COLOUR, TARGET_COLOUR, BASELINE_COLOUR] {
        let (pixels, _) = v.screenshot.count(colour);
        assert!(
            pixels < 50,
            "{pixels} pixels of {colour} with nothing to plot"
        );
    }
}

#[test]
fn a_script_error_is_caught() {
    if !chromium_present() {
        return;
    }
    let page = render(&fixture::minimal()).replacen("<script>", "<script>noSuchFunction();", 1);
    let v = visit(&page, "report-script-error");
    assert!(
        v.console
            .iter()
            .any(|l| l.contains("noSuchFunction is not defined")),
        "script error not seen; console: {:?}",
        v.console
    );
    assert!(
        !ready(&v.dom),
        "the marker was set although the script failed"
    );
}

#[test]
fn an_external_resource_is_caught() {
    if !chromium_present() {
        return;
    }
    let page = render(&fixture::minimal()).replacen(
        "</main>",
        "<img src=\"https://cdn.example.invalid/x.png\"></main>",
        1,
    );
    let v = visit(&page, "report-external");
    assert!(
        v.console.iter().any(|l| l.contains("cdn.example.invalid")),
        "external fetch not reported; console: {:?}",
        v.console
    );
}
