//! A run's summary as one self-contained HTML page: verdict, key figures, charts of the
//! timeline and tables of every figure.
//!
//! The page must open from a file on a machine without internet access, so everything is
//! inline: the CSS, and the charts as SVG drawn here rather than by a JavaScript library.
//! The summary is read as loose JSON: any field may be missing, and what is there is shown.

use serde_json::{Map, Value};

/// Fields shown in their own sections rather than in the "all figures" table.
const STRUCTURED_FIELDS: [&str; 5] = [
    "delivery_latency_ms",
    "write_latency_ms",
    "connect_ms",
    "write_latency_by_kind_ms",
    "timeline",
];

/// The counts that make a run incorrect when any is above zero, with their labels.
const FAULTS: [(&str, &str); 4] = [
    ("lost", "lost"),
    ("duplicates", "duplicates"),
    ("out_of_order", "out of order"),
    ("mismatched_subscribers", "mismatched subscribers"),
];

const TIME_AXIS: &str = "time since measurement start (s)";

/// Renders the run summary as a complete HTML5 document.
pub fn render(summary: &Value) -> String {
    let empty = Map::new();
    let fields = summary.as_object().unwrap_or(&empty);
    let title = match text(fields, "scenario") {
        Some(scenario) => format!("Tidings load test: {}", escape(scenario)),
        None => "Tidings load test".to_owned(),
    };
    let sections = [
        verdict(fields),
        warnings(fields),
        section("Key figures", &cards(fields)),
        section("Over time", &charts(fields)),
        section("Latency percentiles (ms)", &latency_table(fields)),
        section("All figures", &figures_table(fields)),
    ]
    .concat();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>{title}</h1>\n{sections}</main>\n</body>\n</html>\n"
    )
}

/// Formats a figure for reading at a glance: three significant digits and a k, M, G or T
/// suffix, so 450000 reads "450k", 12345 reads "12.3k" and 0.01234 reads "0.012".
pub fn fmt_number(value: f64) -> String {
    const SCALES: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    if !value.is_finite() {
        return "–".to_owned();
    }
    if value.abs() >= 1e15 {
        return format!("{value:.2e}");
    }
    // Compare against just under each scale so 999.7 rounds up to "1k", not "1000".
    for (scale, suffix) in SCALES {
        if value.abs() >= scale * 0.9995 {
            return format!("{}{suffix}", significant(value / scale));
        }
    }
    significant(value)
}

/// Three significant digits (at most three decimals), trailing zeros dropped.
fn significant(value: f64) -> String {
    let magnitude = value.abs();
    let decimals = match magnitude {
        m if m >= 99.95 => 0,
        m if m >= 9.995 => 1,
        m if m >= 0.9995 => 2,
        _ => 3,
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    if text == "-0" { "0" } else { text }.to_owned()
}

/// Escapes text for HTML content and attribute values alike.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn number(fields: &Map<String, Value>, key: &str) -> Option<f64> {
    fields.get(key).and_then(Value::as_f64)
}

fn text<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    fields.get(key).and_then(Value::as_str)
}

fn object<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    fields.get(key).and_then(Value::as_object)
}

fn section(heading: &str, body: &str) -> String {
    format!("<section>\n<h2>{heading}</h2>\n{body}</section>\n")
}

/// The banner: green when nothing was lost, repeated, reordered or mismatched (a count
/// that is absent counts as zero), red with the counts otherwise.
fn verdict(fields: &Map<String, Value>) -> String {
    let counts: Vec<(&str, f64)> = FAULTS
        .iter()
        .map(|&(key, label)| (label, number(fields, key).unwrap_or(0.0)))
        .collect();
    if counts.iter().all(|&(_, count)| count <= 0.0) {
        return "<p class=\"verdict good\">correct: nothing lost, duplicated or out of order</p>\n"
            .to_owned();
    }
    let details: Vec<String> = counts
        .iter()
        // Counts in full: "12345 lost" must not read as a rounded "12.3k".
        .map(|&(label, count)| format!("{label} {count}"))
        .collect();
    format!(
        "<p class=\"verdict bad\"><strong>INCORRECT</strong>: {}</p>\n",
        details.join(" · ")
    )
}

/// Notes on things that do not make a run incorrect but weaken what it shows.
fn warnings(fields: &Map<String, Value>) -> String {
    let notes = [
        ("ended_early", "subscribers ended early"),
        ("connect_errors", "connection errors"),
    ];
    notes
        .iter()
        .filter_map(|&(key, label)| {
            let count = number(fields, key).filter(|&count| count > 0.0)?;
            Some(format!("<p class=\"warning\">{count} {label}</p>\n"))
        })
        .collect()
}

fn cards(fields: &Map<String, Value>) -> String {
    let delivery = object(fields, "delivery_latency_ms");
    let latency = |key: &str| delivery.and_then(|percentiles| number(percentiles, key));
    let figures = [
        ("deliveries", number(fields, "deliveries_per_second"), "/s"),
        ("delivery latency p50", latency("p50"), "ms"),
        ("delivery latency p99", latency("p99"), "ms"),
        ("delivery latency p99.9", latency("p999"), "ms"),
        ("subscribers", number(fields, "subscribers"), ""),
        ("connected in", number(fields, "connect_seconds"), "s"),
        ("writes", number(fields, "writes"), ""),
        (
            "server memory per connection",
            number(fields, "server_kib_per_connection"),
            "KiB",
        ),
        ("tester CPU", number(fields, "tester_cpu_cores"), "cores"),
        ("server CPU", number(fields, "server_cpu_cores"), "cores"),
        ("recovery", number(fields, "recovery_seconds"), "s"),
    ];
    let cards: String = figures
        .iter()
        .filter_map(|&(label, value, unit)| {
            let unit = match unit {
                "" => String::new(),
                unit => format!("<span class=\"unit\"> {unit}</span>"),
            };
            Some(format!(
                "<div class=\"card\"><div class=\"value\">{}{unit}</div>\
                 <div class=\"label\">{label}</div></div>\n",
                fmt_number(value?)
            ))
        })
        .collect();
    if cards.is_empty() {
        return "<p class=\"empty\">no figures recorded</p>\n".to_owned();
    }
    format!("<div class=\"cards\">\n{cards}</div>\n")
}

fn charts(fields: &Map<String, Value>) -> String {
    let mut points: Vec<&Map<String, Value>> = fields
        .get("timeline")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    points.retain(|point| number(point, "t").is_some_and(f64::is_finite));
    if points.is_empty() {
        return "<p class=\"empty\">no timeline recorded</p>\n".to_owned();
    }
    points.sort_by(|a, b| {
        number(a, "t")
            .unwrap_or(0.0)
            .total_cmp(&number(b, "t").unwrap_or(0.0))
    });

    let series = |label, color, key| chart::Series {
        label,
        color,
        points: column(&points, key),
    };
    let latency = chart::Chart {
        title: "Delivery latency",
        x_label: TIME_AXIS,
        x_unit: "s",
        y_label: "latency (ms)",
        y_unit: "ms",
        series: vec![
            series("p50", "#2563eb", "p50_ms"),
            series("p99", "#d97706", "p99_ms"),
            series("p99.9", "#dc2626", "p999_ms"),
        ],
    };
    let deliveries = chart::Chart {
        title: "Deliveries per second",
        x_label: TIME_AXIS,
        x_unit: "s",
        y_label: "deliveries (/s)",
        y_unit: "/s",
        series: vec![series("deliveries/s", "#059669", "deliveries_per_s")],
    };
    // Writes get their own chart: they are usually orders of magnitude fewer than
    // deliveries and would lie flat on a shared axis.
    let writes = chart::Chart {
        title: "Writes per second",
        x_label: TIME_AXIS,
        x_unit: "s",
        y_label: "writes (/s)",
        y_unit: "/s",
        series: vec![series("writes/s", "#7c3aed", "writes_per_s")],
    };
    let connections = chart::Chart {
        title: "Open connections",
        x_label: TIME_AXIS,
        x_unit: "s",
        y_label: "connections",
        y_unit: "",
        series: vec![series("connections", "#0891b2", "connections")],
    };
    let mut html = chart::line(&latency) + &chart::line(&deliveries);
    if !writes.is_empty() {
        html += &chart::line(&writes);
    }
    html + &chart::line(&connections)
}

/// The `(t, value)` pairs of one timeline field, skipping points where it is absent.
fn column(points: &[&Map<String, Value>], key: &str) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter_map(|point| Some((number(point, "t")?, number(point, key)?)))
        .filter(|(_, value)| value.is_finite())
        .collect()
}

fn latency_table(fields: &Map<String, Value>) -> String {
    let mut rows: Vec<(String, &Map<String, Value>)> = [
        ("delivery", "delivery_latency_ms"),
        ("write", "write_latency_ms"),
        ("connect", "connect_ms"),
    ]
    .iter()
    .filter_map(|&(label, key)| Some((label.to_owned(), object(fields, key)?)))
    .collect();
    if let Some(kinds) = object(fields, "write_latency_by_kind_ms") {
        rows.extend(kinds.iter().filter_map(|(kind, percentiles)| {
            Some((format!("write: {}", escape(kind)), percentiles.as_object()?))
        }));
    }
    if rows.is_empty() {
        return "<p class=\"empty\">no latency recorded</p>\n".to_owned();
    }
    let columns = ["p50", "p90", "p99", "p999", "max", "samples"];
    let body: String = rows
        .iter()
        .map(|(label, percentiles)| {
            let cells: String = columns
                .iter()
                .map(|&key| match number(percentiles, key) {
                    Some(value) => format!("<td>{}</td>", fmt_number(value)),
                    None => "<td class=\"missing\">–</td>".to_owned(),
                })
                .collect();
            format!("<tr><th scope=\"row\">{label}</th>{cells}</tr>\n")
        })
        .collect();
    format!(
        "<table>\n<thead><tr><th></th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th>\
         <th>max</th><th>samples (count)</th></tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"
    )
}

/// Every top-level figure with its exact value, so nothing the summary holds is hidden;
/// fields this page does not know that are not scalars are shown as compact JSON.
fn figures_table(fields: &Map<String, Value>) -> String {
    let body: String = fields
        .iter()
        .filter(|(key, _)| !STRUCTURED_FIELDS.contains(&key.as_str()))
        .map(|(key, value)| {
            format!(
                "<tr><th scope=\"row\">{}</th><td>{}</td></tr>\n",
                escape(key),
                escape(&exact(value))
            )
        })
        .collect();
    if body.is_empty() {
        return "<p class=\"empty\">no figures recorded</p>\n".to_owned();
    }
    format!("<table class=\"figures\">\n<tbody>\n{body}</tbody>\n</table>\n")
}

/// A value in full: integers as they are, fractions to three decimals unless that would
/// round them away.
fn exact(value: &Value) -> String {
    match value {
        Value::Null => "–".to_owned(),
        Value::String(text) => text.clone(),
        Value::Number(n) if n.is_f64() => {
            let fraction = n.as_f64().unwrap_or(f64::NAN);
            let rounded = format!("{fraction:.3}");
            let rounded = rounded.trim_end_matches('0').trim_end_matches('.');
            if fraction != 0.0 && rounded.trim_start_matches('-') == "0" {
                n.to_string()
            } else {
                rounded.to_owned()
            }
        }
        other => other.to_string(),
    }
}

/// Line charts as inline SVG.
mod chart {
    use super::{escape, fmt_number};

    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 280.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 36.0;
    const BOTTOM: f64 = 48.0;
    /// Series longer than this draw their dots only on hover.
    const VISIBLE_DOTS: usize = 120;

    /// One line: its legend label, its colour and its `(x, y)` points in x order.
    pub struct Series<'a> {
        pub label: &'a str,
        pub color: &'a str,
        pub points: Vec<(f64, f64)>,
    }

    /// A chart of one or more series sharing both axes.
    pub struct Chart<'a> {
        pub title: &'a str,
        pub x_label: &'a str,
        pub y_label: &'a str,
        /// Appended to x values in point tooltips ("s"); may be empty.
        pub x_unit: &'a str,
        /// Appended to y values in point tooltips ("ms", "/s"); may be empty.
        pub y_unit: &'a str,
        pub series: Vec<Series<'a>>,
    }

    impl Chart<'_> {
        pub fn is_empty(&self) -> bool {
            self.series.iter().all(|series| series.points.is_empty())
        }
    }

    /// A linear axis: a data range mapped onto a pixel range, with round tick values.
    struct Axis {
        ticks: Vec<f64>,
        min: f64,
        max: f64,
        from: f64,
        to: f64,
    }

    impl Axis {
        fn new(low: f64, high: f64, from: f64, to: f64, tick_count: usize) -> Self {
            let high = if high > low { high } else { low + 1.0 };
            let ticks = nice_ticks(low, high, tick_count);
            let min = ticks.first().copied().unwrap_or(low);
            let max = ticks.last().copied().unwrap_or(high);
            Axis {
                ticks,
                min,
                max,
                from,
                to,
            }
        }

        fn at(&self, value: f64) -> f64 {
            let span = self.max - self.min;
            if span > 0.0 {
                self.from + (value - self.min) / span * (self.to - self.from)
            } else {
                // Only when `low + 1.0 == low`, for values too large to tell apart.
                (self.from + self.to) / 2.0
            }
        }
    }

    /// About `count` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten)
    /// covering `low..=high`.
    pub fn nice_ticks(low: f64, high: f64, count: usize) -> Vec<f64> {
        let rough = (high - low) / count.max(1) as f64;
        if !(rough.is_finite() && rough > 0.0) {
            return vec![low, high];
        }
        let magnitude = 10f64.powf(rough.log10().floor());
        let step = match rough / magnitude {
            r if r <= 1.0 => 1.0,
            r if r <= 2.0 => 2.0,
            r if r <= 2.5 => 2.5,
            r if r <= 5.0 => 5.0,
            _ => 10.0,
        } * magnitude;
        let first = (low / step).floor();
        let last = (high / step).ceil();
        let count = ((last - first) as usize).min(4 * count);
        (0..=count).map(|i| (first + i as f64) * step).collect()
    }

    /// Renders the chart as a `<figure>` holding an SVG, or a note when it has no points.
    /// Every point carries a `<title>`, which browsers show on hover.
    pub fn line(chart: &Chart<'_>) -> String {
        let title = escape(chart.title);
        if chart.is_empty() {
            return format!("<p class=\"empty\">{title}: not recorded</p>\n");
        }
        let points = || chart.series.iter().flat_map(|series| &series.points);
        let (x_low, x_high) = bounds(points().map(|&(x, _)| x));
        let (y_low, y_high) = bounds(points().map(|&(_, y)| y));
        // Rates and latencies are read against zero; a y axis that starts above it
        // makes small changes look large.
        let x = Axis::new(x_low, x_high, LEFT, WIDTH - RIGHT, 8);
        let y = Axis::new(y_low.min(0.0), y_high, HEIGHT - BOTTOM, TOP, 5);

        let mut svg = format!(
            "<figure>\n<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}\" \
             xmlns=\"http://www.w3.org/2000/svg\">\n<title>{title}</title>\n"
        );
        svg += &grid(&x, &y);
        svg += &axis_labels(chart);
        svg += &legend(&chart.series);
        for series in &chart.series {
            svg += &polyline(series, &x, &y, chart);
        }
        svg += "</svg>\n</figure>\n";
        svg
    }

    fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
            (low.min(v), high.max(v))
        })
    }

    fn grid(x: &Axis, y: &Axis) -> String {
        let mut svg = String::new();
        for &tick in &y.ticks {
            let py = y.at(tick);
            svg += &format!(
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/>\
                 <text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                WIDTH - RIGHT,
                LEFT - 6.0,
                py + 4.0,
                fmt_number(tick)
            );
        }
        for &tick in &x.ticks {
            let px = x.at(tick);
            svg += &format!(
                "<line class=\"grid\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{TOP}\" y2=\"{}\"/>\
                 <text class=\"tick\" x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                HEIGHT - BOTTOM,
                HEIGHT - BOTTOM + 16.0,
                fmt_number(tick)
            );
        }
        svg += &format!(
            "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{bottom}\" y2=\"{bottom}\"/>\
             <line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{bottom}\"/>\n",
            WIDTH - RIGHT,
            bottom = HEIGHT - BOTTOM,
        );
        svg
    }

    fn axis_labels(chart: &Chart<'_>) -> String {
        let middle = (TOP + HEIGHT - BOTTOM) / 2.0;
        format!(
            "<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
             <text class=\"label\" transform=\"translate(16 {middle}) rotate(-90)\" \
             text-anchor=\"middle\">{}</text>\n\
             <text class=\"chart-title\" x=\"{LEFT}\" y=\"20\">{}</text>\n",
            (LEFT + WIDTH - RIGHT) / 2.0,
            HEIGHT - 8.0,
            escape(chart.x_label),
            escape(chart.y_label),
            escape(chart.title),
        )
    }

    /// Legend entries laid out right to left from the top-right corner.
    fn legend(series: &[Series<'_>]) -> String {
        let mut svg = String::new();
        let mut right = WIDTH - RIGHT;
        for series in series.iter().rev() {
            // Roughly the width of the label at the legend's font size.
            let width = 7.0 * series.label.chars().count() as f64 + 28.0;
            let left = right - width;
            svg += &format!(
                "<line x1=\"{left}\" x2=\"{}\" y1=\"16\" y2=\"16\" stroke=\"{}\" stroke-width=\"3\"/>\
                 <text class=\"legend\" x=\"{}\" y=\"20\">{}</text>\n",
                left + 16.0,
                escape(series.color),
                left + 20.0,
                escape(series.label),
            );
            right = left - 8.0;
        }
        svg
    }

    /// The line and a dot per point whose `<title>` gives its values. Dots of long series
    /// are transparent until hovered, so they do not hide the line.
    fn polyline(series: &Series<'_>, x: &Axis, y: &Axis, chart: &Chart<'_>) -> String {
        let label = escape(series.label);
        let color = escape(series.color);
        let with_unit = |value: f64, unit: &str| match unit {
            "" => fmt_number(value),
            unit => format!("{} {}", fmt_number(value), escape(unit)),
        };
        let opacity = if series.points.len() <= VISIBLE_DOTS {
            1
        } else {
            0
        };
        let coordinates: Vec<String> = series
            .points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x.at(px), y.at(py)))
            .collect();
        let mut svg = format!(
            "<g class=\"series\" aria-label=\"{label}\">\n<polyline fill=\"none\" stroke=\"{color}\" \
             stroke-width=\"2\" stroke-linejoin=\"round\" points=\"{}\"><title>{label}</title></polyline>\n",
            coordinates.join(" ")
        );
        for &(px, py) in &series.points {
            svg += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\" \
                 fill-opacity=\"{opacity}\"><title>{label} at {}: {}</title></circle>\n",
                x.at(px),
                y.at(py),
                with_unit(px, chart.x_unit),
                with_unit(py, chart.y_unit),
            );
        }
        svg + "</g>\n"
    }
}

const STYLE: &str = "
body { margin: 0; background: #f8fafc; color: #0f172a;
  font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.6em; margin: 0 0 12px; }
h2 { font-size: 1.2em; margin: 28px 0 12px; border-bottom: 1px solid #e2e8f0; padding-bottom: 4px; }
.verdict { padding: 12px 16px; border-radius: 8px; font-weight: 600; margin: 0 0 8px; }
.verdict.good { background: #dcfce7; color: #14532d; border: 1px solid #86efac; }
.verdict.bad { background: #fee2e2; color: #7f1d1d; border: 1px solid #fca5a5; }
.warning { padding: 8px 16px; border-radius: 8px; margin: 0 0 8px;
  background: #fef3c7; color: #78350f; border: 1px solid #fcd34d; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 12px 14px; }
.card .value { font-size: 1.6em; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .unit { font-size: 0.6em; font-weight: 400; color: #64748b; }
.card .label { color: #475569; font-size: 0.9em; }
figure { margin: 0 0 16px; background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 8px; }
svg { width: 100%; height: auto; display: block; font-size: 12px; }
svg .grid { stroke: #e2e8f0; stroke-width: 1; }
svg .axis { stroke: #94a3b8; stroke-width: 1; }
svg .tick { fill: #475569; }
svg .label, svg .legend { fill: #334155; font-size: 12px; }
svg .chart-title { fill: #0f172a; font-size: 14px; font-weight: 600; }
svg circle:hover { r: 5; fill-opacity: 1; }
table { border-collapse: collapse; background: #fff; border: 1px solid #e2e8f0; min-width: 50%; }
th, td { padding: 6px 12px; border-bottom: 1px solid #e2e8f0; text-align: right;
  font-variant-numeric: tabular-nums; }
th[scope=row] { text-align: left; font-weight: 500; }
td.missing { color: #94a3b8; }
table.figures td { text-align: left; font-family: ui-monospace, monospace; word-break: break-all; }
.empty { color: #64748b; font-style: italic; }
";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn percentiles(scale: f64) -> Value {
        json!({"p50": scale, "p90": 2.0 * scale, "p99": 4.0 * scale, "p999": 8.0 * scale,
               "max": 20.0 * scale, "samples": 450000})
    }

    fn full_summary() -> Value {
        let timeline: Vec<Value> = (0..30)
            .map(|t| {
                json!({"t": t as f64, "connections": 10000, "deliveries_per_s": 450000.0,
                       "p50_ms": 1.2, "p99_ms": 8.5, "p999_ms": 31.0, "writes_per_s": 45.0})
            })
            .collect();
        json!({
            "scenario": "fanout", "subscribers": 10000, "connect_seconds": 4.2,
            "writes": 1350, "expected_deliveries": 13500000, "deliveries": 13500000,
            "deliveries_per_second": 450000.0, "lost": 0, "duplicates": 0,
            "out_of_order": 0, "mismatched_subscribers": 0, "ended_early": 0,
            "connect_errors": 0, "server_kib_per_connection": 12.5,
            "tester_cpu_cores": 0.93, "server_cpu_cores": 1.7,
            "delivery_latency_ms": percentiles(1.2), "write_latency_ms": percentiles(3.0),
            "connect_ms": percentiles(0.8),
            "write_latency_by_kind_ms": {"create": percentiles(3.0), "update": percentiles(2.5)},
            "timeline": timeline,
            "build": "release",
        })
    }

    #[test]
    fn a_full_summary_renders_charts_tables_and_a_green_verdict() {
        let page = render(&full_summary());

        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("verdict good"));
        assert!(!page.contains("INCORRECT"));
        assert_eq!(page.matches("<svg").count(), 4);
        assert!(page.contains("Delivery latency"));
        assert!(page.contains("p99.9"));
        assert!(page.contains(">450k<"));
        assert!(page.contains("write: create"));
        assert!(page.contains("build</th><td>release"));
        assert!(!page.contains("no timeline recorded"));
    }

    #[test]
    fn the_page_loads_nothing_from_outside() {
        let page = render(&full_summary());

        assert!(!page.contains("<script src"));
        assert!(!page.contains("<link"));
        assert!(!page.contains("url("));
        let svg_namespaces = page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
        assert_eq!(page.matches("http").count(), svg_namespaces);
    }

    #[test]
    fn a_lost_delivery_renders_a_red_verdict_with_the_counts() {
        let mut summary = full_summary();
        summary["lost"] = json!(3);

        let page = render(&summary);

        assert!(page.contains("verdict bad"));
        assert!(page.contains("INCORRECT"));
        assert!(page.contains("lost 3"));
        assert!(!page.contains("verdict good"));
    }

    #[test]
    fn an_empty_summary_renders_a_page_without_charts() {
        let page = render(&json!({}));

        assert!(page.contains("</html>"));
        assert!(page.contains("no timeline recorded"));
        assert!(!page.contains("<svg"));
    }

    #[test]
    fn values_of_the_wrong_type_or_null_are_skipped() {
        let summary = json!({"scenario": null, "lost": "many", "timeline": [1, {"t": null},
            {"t": 0.0, "p50_ms": null}], "delivery_latency_ms": 7, "subscribers": null});

        let page = render(&summary);

        assert!(page.contains("verdict good"));
        assert!(page.contains("not recorded"));
        assert!(render(&json!([1, 2])).contains("</html>"));
    }

    #[test]
    fn a_single_zero_point_timeline_still_draws() {
        let summary = json!({"timeline": [{"t": 0.0, "connections": 0, "deliveries_per_s": 0.0,
            "p50_ms": 0.0, "p99_ms": 0.0, "p999_ms": 0.0}]});

        let page = render(&summary);

        assert_eq!(page.matches("<svg").count(), 3);
        assert!(!page.contains("NaN"));
        assert!(!page.contains("inf,") && !page.contains("\"inf"));
    }

    #[test]
    fn huge_values_keep_the_axes_finite() {
        let summary = json!({"timeline": [{"t": 1e18, "connections": 1e300},
            {"t": 1e18, "connections": 1e300}]});

        let page = render(&summary);

        assert!(page.contains("<svg"));
        assert!(!page.contains("NaN"));
        assert!(!page.contains("inf,") && !page.contains("\"inf"));
    }

    #[test]
    fn a_scenario_name_with_markup_is_escaped() {
        let summary = json!({"scenario": "<script>alert('x & \"y\"')</script>",
            "write_latency_by_kind_ms": {"<b>": percentiles(1.0)}, "<i>": "<u>"});

        let page = render(&summary);

        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;alert(&#39;x &amp; &quot;y&quot;&#39;)"));
        assert!(!page.contains("<b>"));
        assert!(!page.contains("<i>"));
        assert!(!page.contains("<u>"));
    }

    #[test]
    fn numbers_read_at_a_glance() {
        assert_eq!(fmt_number(450000.0), "450k");
        assert_eq!(fmt_number(1_500_000.0), "1.5M");
        assert_eq!(fmt_number(12_345.0), "12.3k");
        assert_eq!(fmt_number(999.7), "1k");
        assert_eq!(fmt_number(0.0), "0");
        assert_eq!(fmt_number(42.0), "42");
        assert_eq!(fmt_number(4.5678), "4.57");
        assert_eq!(fmt_number(0.01234), "0.012");
        assert_eq!(fmt_number(-2500.0), "-2.5k");
        assert_eq!(fmt_number(1e300), "1.00e300");
        assert_eq!(fmt_number(f64::NAN), "–");
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            chart::nice_ticks(0.0, 31.0, 5),
            vec![0.0, 10.0, 20.0, 30.0, 40.0]
        );
        assert_eq!(chart::nice_ticks(0.0, 1.0, 5).len(), 6);
        assert_eq!(
            chart::nice_ticks(0.0, 7.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0]
        );
        assert_eq!(chart::nice_ticks(0.0, 59.0, 8).len(), 7);
        assert_eq!(chart::nice_ticks(3.0, 3.0, 5).len(), 2);
        let ticks = chart::nice_ticks(0.0, 450_000.0, 5);
        assert_eq!(ticks.first(), Some(&0.0));
        assert!(ticks.last().is_some_and(|&t| t >= 450_000.0));
    }
}
