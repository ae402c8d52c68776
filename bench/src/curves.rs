//! How cost grows: fan-out latency and CPU per delivery as subscribers grow
//! (the system and the fan-out floor side by side), and projection catch-up
//! as its batch grows (beside the broker floor); drawn as one SVG.

use std::ops::Range;
use std::path::Path;

use anyhow::anyhow;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde_json::{Value, json};

use crate::cli::Cli;
use crate::projection::{backlog, catch_up};
use crate::scenarios::fan_out;

/// The system behind `base` (process `pid`) and the floor behind
/// `floor_base` (process `floor_pid`).
pub(crate) struct Targets<'a> {
    pub(crate) base: &'a str,
    pub(crate) pid: u32,
    pub(crate) floor_base: &'a str,
    pub(crate) floor_pid: u32,
}

/// Fan-out at each of `--curve-subscribers`, on the system and the floor.
pub(crate) async fn fan_out_curve(cli: &Cli, targets: &Targets<'_>) -> anyhow::Result<Value> {
    let mut points = Vec::new();
    for &subscribers in &cli.curve_subscribers {
        let mut step = cli.clone();
        step.subscribers = subscribers;
        step.fan_out_seconds = cli.curve_seconds;
        eprintln!("  fan-out curve: {subscribers} subscribers");
        let system = fan_out(&step, targets.base, targets.pid, false).await?;
        let floor = fan_out(&step, targets.floor_base, targets.floor_pid, true).await?;
        let point = |fan: &Value| {
            json!({
                "p50_ms": fan["p50_ms"], "p99_ms": fan["p99_ms"],
                "delivered": fan["delivered"], "expected": fan["expected"],
                "cpu_us_per_delivery": fan["cpu_us_per_delivery"],
            })
        };
        points.push(json!({
            "subscribers": subscribers,
            "system": point(&system),
            "floor": point(&floor),
        }));
    }
    Ok(Value::Array(points))
}

/// Projection catch-up of `--curve-events` queued orders at each of
/// `--curve-batches`, each on a backlog of its own.
pub(crate) async fn batch_curve(cli: &Cli) -> anyhow::Result<Value> {
    let mut points = Vec::new();
    for &batch in &cli.curve_batches {
        eprintln!(
            "  projection curve: batches of {batch}, {} events",
            cli.curve_events
        );
        let backlog = backlog(cli, cli.curve_events).await?;
        let (seconds, mut search) = catch_up(cli, &backlog, Some(batch)).await?;
        let _ = search.kill().await;
        points.push(json!({
            "batch": batch,
            "events": cli.curve_events,
            "catch_up_s": seconds,
            "events_per_s": cli.curve_events as f64 / seconds,
        }));
    }
    Ok(Value::Array(points))
}

/// The table's lines for the curves.
pub(crate) fn rows(fan: &Value, batches: &Value) -> Vec<String> {
    let mut rows = Vec::new();
    let number = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    for point in fan.as_array().into_iter().flatten() {
        let (system, floor) = (&point["system"], &point["floor"]);
        rows.push(format!(
            "fan-out curve, {:>6} subscribers: p50 {:.1} / p99 {:.1} ms, {:.1} us CPU per delivery ({}/{}); floor p50 {:.1} / p99 {:.1} ms, {:.1} us",
            point["subscribers"],
            number(&system["p50_ms"]),
            number(&system["p99_ms"]),
            number(&system["cpu_us_per_delivery"]),
            system["delivered"],
            system["expected"],
            number(&floor["p50_ms"]),
            number(&floor["p99_ms"]),
            number(&floor["cpu_us_per_delivery"]),
        ));
    }
    for point in batches.as_array().into_iter().flatten() {
        rows.push(format!(
            "projection curve, batches of {:>4}: {:.0} events/s",
            point["batch"],
            number(&point["events_per_s"]),
        ));
    }
    rows
}

/// (x, y) for each point that has both.
fn series(points: &Value, x: &str, y: &[&str]) -> Vec<(f64, f64)> {
    points
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let y = y.iter().try_fold(p, |v, k| v.get(k))?;
            Some((p[x].as_f64()?, y.as_f64()?))
        })
        .collect()
}

/// From 0 to a little above the largest value.
fn up_to(values: impl Iterator<Item = f64>) -> Range<f64> {
    let top = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    0.0..(top * 1.1).max(1.0)
}

type Line<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// One panel: `lines` over a linear or logarithmic x axis.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    descs: (&str, &str),
    log_x: bool,
    lines: &[Line<'_>],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let xs = lines.iter().flat_map(|(_, _, l)| l.iter().map(|p| p.0));
    let ys = up_to(lines.iter().flat_map(|(_, _, l)| l.iter().map(|p| p.1)));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    let built = |e| anyhow!("drawing {title}: {e:?}");
    if log_x {
        let top = xs.fold(1.0, f64::max) * 1.5;
        let chart = builder
            .build_cartesian_2d((0.8..top).log_scale(), ys)
            .map_err(built)?;
        draw_lines(chart, title, descs, lines)
    } else {
        let chart = builder.build_cartesian_2d(up_to(xs), ys).map_err(built)?;
        draw_lines(chart, title, descs, lines)
    }
}

fn draw_lines<'a, DB, X>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    lines: &[Line<'_>],
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing {title}: {e:?}");
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(WHITE)
        .draw()
        .map_err(err)?;
    for (name, color, points) in lines {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// Draws the curves of one run into `path` (SVG): fan-out latency and CPU
/// per delivery against subscribers, and catch-up against batch size, with
/// the broker floor of the same run when it was measured.
pub(crate) fn plot(
    path: &Path,
    fan: &Value,
    batches: &Value,
    broker_floor: Option<f64>,
) -> anyhow::Result<()> {
    const SYSTEM: RGBColor = RGBColor(31, 119, 180);
    const SYSTEM_TAIL: RGBColor = RGBColor(214, 39, 40);
    const FLOOR: RGBColor = RGBColor(127, 127, 127);
    const FLOOR_TAIL: RGBColor = RGBColor(44, 160, 44);
    let root = SVGBackend::new(path, (1500, 480)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow!("drawing {}: {e:?}", path.display()))?;
    let panels = root.split_evenly((1, 3));
    let at = |side: &str, what: &str| series(fan, "subscribers", &[side, what]);
    panel(
        &panels[0],
        "fan-out latency (10 stores, 1 change/store/s)",
        ("subscribers", "ms"),
        false,
        &[
            ("system p50", SYSTEM, at("system", "p50_ms")),
            ("system p99", SYSTEM_TAIL, at("system", "p99_ms")),
            ("floor p50", FLOOR, at("floor", "p50_ms")),
            ("floor p99", FLOOR_TAIL, at("floor", "p99_ms")),
        ],
    )?;
    panel(
        &panels[1],
        "CPU per delivery (the serving process)",
        ("subscribers", "us"),
        false,
        &[
            ("system", SYSTEM, at("system", "cpu_us_per_delivery")),
            ("floor", FLOOR, at("floor", "cpu_us_per_delivery")),
        ],
    )?;
    let caught_up = series(batches, "batch", &["events_per_s"]);
    let mut lines = vec![("search catch-up", SYSTEM, caught_up.clone())];
    if let (Some(floor), Some(first), Some(last)) =
        (broker_floor, caught_up.first(), caught_up.last())
    {
        lines.push((
            "broker floor",
            FLOOR,
            vec![(first.0, floor), (last.0, floor)],
        ));
    }
    panel(
        &panels[2],
        "projection catch-up by batch size",
        ("events per transaction (log)", "events/s"),
        true,
        &lines,
    )?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))?;
    Ok(())
}
