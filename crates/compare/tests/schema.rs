//! The JSON report against its published schema (docs/report.schema.json): reports built by hand
//! (every part filled, and the least there can be) serialize to documents the schema accepts, and
//! the schema rejects documents that break it.

mod fixture;

use compare::report::{Report, SCHEMA_VERSION};
use jsonschema::Validator;
use serde_json::{json, Value};

const SCHEMA: &str = include_str!("../../../docs/report.schema.json");

fn validator() -> Validator {
    let schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
    jsonschema::meta::validate(&schema).expect("the schema is a valid JSON Schema");
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

/// The schema's complaints about `doc`, one line each.
fn errors(v: &Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect()
}

fn to_json(r: &Report) -> Value {
    serde_json::to_value(r).expect("a report serializes")
}

#[test]
fn full_report_validates() {
    let doc = to_json(&fixture::full());
    let errors = errors(&validator(), &doc);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // And it reads back as the same report.
    let back: Report = serde_json::from_value(doc).expect("reads back");
    assert_eq!(back, fixture::full());
}

#[test]
fn minimal_report_validates() {
    let doc = to_json(&fixture::minimal());
    assert_eq!(doc["comparison"], Value::Null);
    // No protocol set: no logins object at all.
    assert!(doc["sessions"].get("logins").is_none(), "{doc}");
    let errors = errors(&validator(), &doc);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn the_schema_version_is_the_crates() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    assert_eq!(
        schema["properties"]["schema_version"]["const"],
        json!(SCHEMA_VERSION)
    );
}

#[test]
fn every_field_is_described() {
    // Walks the schema: each property of each object carries a description (directly, or on the
    // definition it refers to).
    fn walk(node: &Value, defs: &Value, path: &str, missing: &mut Vec<String>) {
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, p) in props {
            let target = p
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
                .map(|d| &defs[d]);
            let described = p.get("description").is_some()
                || target.is_some_and(|t| t.get("description").is_some());
            if !described {
                missing.push(format!("{path}.{name}"));
            }
        }
    }
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let defs = &schema["$defs"];
    let mut missing = Vec::new();
    walk(&schema, defs, "", &mut missing);
    for (name, def) in defs.as_object().unwrap() {
        walk(def, defs, name, &mut missing);
    }
    assert!(missing.is_empty(), "undescribed: {missing:?}");
}

/// Breaks a valid document in place.
type Breaker = dyn Fn(&mut Value);

#[test]
fn broken_reports_are_rejected() {
    let v = validator();
    let broken = |f: &Breaker| {
        let mut doc = to_json(&fixture::full());
        f(&mut doc);
        errors(&v, &doc)
    };
    let cases: [(&str, &Breaker, &str); 8] = [
        (
            "no requests",
            &|d| {
                d.as_object_mut().unwrap().remove("requests");
            },
            "requests",
        ),
        (
            "another version",
            &|d| d["schema_version"] = json!(2),
            "/schema_version",
        ),
        (
            "a negative count",
            &|d| d["requests"]["lost"] = json!(-1),
            "/requests/lost",
        ),
        (
            "a cause missing",
            &|d| {
                d["requests"]["lost_by_cause"]
                    .as_object_mut()
                    .unwrap()
                    .remove("overflow");
            },
            "overflow",
        ),
        (
            "an unknown field",
            &|d| d["latency"]["online"]["p95_us"] = json!(3),
            "p95_us",
        ),
        (
            "a login cause missing",
            &|d| {
                d["sessions"]["logins"]
                    .as_object_mut()
                    .unwrap()
                    .remove("refused");
            },
            "refused",
        ),
        (
            "logins without their protocol",
            &|d| d["sessions"]["logins"]["protocol"] = json!(null),
            "/sessions/logins/protocol",
        ),
        (
            "a percentile as text",
            &|d| d["latency"]["target"]["p99_us"] = json!("5ms"),
            "/latency/target/p99_us",
        ),
    ];
    for (what, f, expect) in cases {
        let errors = broken(f);
        assert!(
            errors.iter().any(|e| e.contains(expect)),
            "{what}: expected an error about {expect}, got {errors:?}"
        );
    }
}

#[test]
fn a_report_missing_requests_does_not_read_back_either() {
    // The schema and the reader agree: what the schema refuses, serde refuses.
    let mut doc = to_json(&fixture::minimal());
    doc.as_object_mut().unwrap().remove("requests");
    assert!(!validator().is_valid(&doc));
    assert!(serde_json::from_value::<Report>(doc).is_err());
}
