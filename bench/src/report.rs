//! The printed table's rows.

use serde_json::Value;

/// A rate next to its floor's, as a percentage.
pub(crate) fn ratio(value: &Value, floor: &Value) -> String {
    match (value.as_f64(), floor.as_f64()) {
        (Some(v), Some(f)) if f > 0.0 => format!("{:.0}%", 100.0 * v / f),
        _ => "-".into(),
    }
}

/// The server's CPU per request beside its database floor's: what the
/// gateway spends on a read beyond the stack and the select.
pub(crate) fn cpu_row(name: &str, result: &Value, floor: &Value) -> String {
    let cpu = |v: &Value| v["server_cpu_us_per_request"].clone();
    let us = |v: &Value| v.as_f64().map_or("-".into(), |us| format!("{us:.0} us"));
    format!(
        "  {name}: server CPU per request {} (its database floor's {}): floor / it {}",
        us(&cpu(result)),
        us(&cpu(floor)),
        ratio(&cpu(floor), &cpu(result)),
    )
}

/// One line of the table: rate, p50, p99, and the rate beside the floor's.
pub(crate) fn row(name: &str, result: &Value, floor: Option<&Value>) -> String {
    let rate = result["requests_per_s"].as_f64();
    let ratio = floor.map_or("-".into(), |f| {
        ratio(&result["requests_per_s"], &f["requests_per_s"])
    });
    format!(
        "{name:<34} {:>10} {:>9.2} {:>9.2} {:>8}",
        rate.map_or("-".into(), |r| format!("{r:.0}")),
        result["p50_ms"].as_f64().unwrap_or(f64::NAN),
        result["p99_ms"].as_f64().unwrap_or(f64::NAN),
        ratio
    )
}
