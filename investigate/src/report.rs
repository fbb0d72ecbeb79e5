//! `--report FILE.html`: one self-contained HTML file (no external scripts, styles or fonts):
//! the tables and three SVG charts drawn here: bytes per hour stacked by origin with the alert's
//! window shaded, origins over time with their first-seen marks, and the top credentials.
//!
//! A few lines of inline script check the page once it is drawn: every chart writes the size
//! of what it drew (`data-drawn-width`, `data-drawn-height`) and its number of marks
//! (`data-marks`) into the DOM, and an error anywhere in the page is written into
//! `#page-errors`. The tests read these back from headless Chromium's DOM.

use crate::output::text;
use crate::{Answers, Table, Value};
use exfilwatch::time::{format_rfc3339, Nanos, HOUR};
use exfilwatch::units::human_bytes;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

const PALETTE: [&str; 9] =
    ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"];
const OTHER_COLOUR: &str = "#bab0ac";
/// Origins drawn in their own colour in the stacked chart; the rest are "other".
const STACKED: usize = 8;
const LANES: usize = 20;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn table_named<'a>(a: &'a Answers, name: &str) -> Option<&'a Table> {
    a.tables.iter().find(|t| t.name == name)
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) | Value::Time(i) => *i,
        _ => 0,
    }
}

fn day_label(t: Nanos) -> String {
    let s = format_rfc3339(t);
    // 2021-08-17T10:00:00Z -> 08-17 10:00
    s.get(5..16).map(|x| x.replace('T', " ")).unwrap_or(s)
}

/// Bytes per hour, stacked by origin; the alert's window shaded.
fn stacked_chart(a: &Answers) -> String {
    let (w, h, left, bottom, top) = (960.0, 320.0, 70.0, 40.0, 20.0);
    let mut svg = String::new();
    let Some(tl) = table_named(a, "timeline") else { return svg };
    let (hi, oi, bi) =
        (tl.column("hour").unwrap_or(0), tl.column("origin").unwrap_or(1), tl.column("bytes").unwrap_or(2));
    let mut per_origin: HashMap<String, i64> = HashMap::new();
    for r in &tl.rows {
        *per_origin.entry(text(&r[oi])).or_default() += int(&r[bi]);
    }
    let mut ranked: Vec<(String, i64)> = per_origin.into_iter().collect();
    ranked.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    let shown: Vec<String> = ranked.iter().take(STACKED).map(|(o, _)| o.clone()).collect();
    let colour = |o: &str| shown.iter().position(|s| s == o).map_or(OTHER_COLOUR, |i| PALETTE[i % PALETTE.len()]);
    let mut hours: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
    for r in &tl.rows {
        let o = text(&r[oi]);
        let o = if shown.contains(&o) { o } else { "other".to_string() };
        let slot = hours.entry(int(&r[hi])).or_default();
        match slot.iter_mut().find(|(x, _)| *x == o) {
            Some(e) => e.1 += int(&r[bi]),
            None => slot.push((o, int(&r[bi]))),
        }
    }
    let (Some(&first), Some(&last)) = (hours.keys().next(), hours.keys().next_back()) else {
        return "<p>No requests in the period.</p>".into();
    };
    let n = ((last - first) / HOUR + 1).max(1) as f64;
    let max = hours.values().map(|v| v.iter().map(|x| x.1).sum::<i64>()).max().unwrap_or(1).max(1) as f64;
    let (pw, ph) = (w - left - 10.0, h - top - bottom);
    let bar = pw / n;
    let x_of = |t: i64| left + (t - first) as f64 / HOUR as f64 * bar;
    let _ = write!(
        svg,
        r#"<svg class="chart" id="chart-hourly" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>Bytes per hour by origin</title>"#
    );
    if let Some(al) = &a.alert {
        let (x0, x1) = (
            x_of(al.start - al.start.rem_euclid(HOUR)).max(left),
            x_of(al.end - al.end.rem_euclid(HOUR) + HOUR).min(left + pw),
        );
        if x1 > x0 {
            let _ = write!(
                svg,
                r##"<rect class="alert-window" x="{x0:.1}" y="{top}" width="{:.1}" height="{ph}" fill="#e15759" fill-opacity="0.15"><title>alert window {} .. {}</title></rect>"##,
                x1 - x0,
                format_rfc3339(al.start),
                format_rfc3339(al.end)
            );
        }
    }
    svg.push_str(r#"<g class="marks">"#);
    for (t, parts) in &hours {
        let mut y = top + ph;
        let mut parts = parts.clone();
        parts.sort_by_key(|(o, _)| shown.iter().position(|s| s == o).unwrap_or(usize::MAX));
        for (o, b) in parts {
            let bh = b as f64 / max * ph;
            if bh <= 0.0 {
                continue;
            }
            y -= bh;
            let _ = write!(
                svg,
                r#"<rect x="{:.2}" y="{y:.2}" width="{:.2}" height="{bh:.2}" fill="{}"><title>{} {}: {}</title></rect>"#,
                x_of(*t),
                (bar * 0.9).max(0.5),
                colour(&o),
                esc(&day_label(*t)),
                esc(&o),
                human_bytes(b as u64)
            );
        }
    }
    svg.push_str("</g>");
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>"##,
        top + ph,
        left + pw,
        top + ph,
        top + ph
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end" font-size="11">{}</text><text x="{}" y="{}" text-anchor="end" font-size="11">0</text>"#,
        left - 4.0,
        top + 10.0,
        human_bytes(max as u64),
        left - 4.0,
        top + ph
    );
    let ticks = 6.min(n as usize).max(1);
    for i in 0..=ticks {
        let t = first + ((last - first) as f64 * i as f64 / ticks as f64) as i64;
        let t = t - t.rem_euclid(HOUR);
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            x_of(t) + bar / 2.0,
            top + ph + 16.0,
            esc(&day_label(t))
        );
    }
    svg.push_str("</svg>");
    // Legend.
    svg.push_str(r#"<div class="legend">"#);
    for (i, o) in shown.iter().enumerate() {
        let _ = write!(svg, r#"<span><i style="background:{}"></i>{}</span>"#, PALETTE[i % PALETTE.len()], esc(o));
    }
    if ranked.len() > shown.len() {
        let _ = write!(
            svg,
            r#"<span><i style="background:{OTHER_COLOUR}"></i>other ({} origins)</span>"#,
            ranked.len() - shown.len()
        );
    }
    svg.push_str("</div>");
    svg
}

/// One lane per origin (the most recently first seen first): first to last seen, its active
/// hours, and a mark at its first sighting.
fn lanes_chart(a: &Answers) -> String {
    let Some(fs) = table_named(a, "origins") else { return String::new() };
    let Some(tl) = table_named(a, "timeline") else { return String::new() };
    let (oi, fi, li) =
        (fs.column("origin").unwrap_or(0), fs.column("first_seen").unwrap_or(3), fs.column("last_seen").unwrap_or(4));
    let mut origins: Vec<(String, i64, i64)> =
        fs.rows.iter().map(|r| (text(&r[oi]), int(&r[fi]), int(&r[li]))).collect();
    origins.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    origins.truncate(LANES);
    if origins.is_empty() {
        return "<p>No origins in the period.</p>".into();
    }
    let first = origins.iter().map(|o| o.1).min().unwrap_or(0);
    let last = origins.iter().map(|o| o.2).max().unwrap_or(first).max(first + HOUR);
    let (lane, left, w, top) = (18.0, 190.0, 960.0, 10.0);
    let h = top + lane * origins.len() as f64 + 30.0;
    let pw = w - left - 20.0;
    let x_of = |t: i64| left + (t - first) as f64 / (last - first) as f64 * pw;
    let (thi, toi) = (tl.column("hour").unwrap_or(0), tl.column("origin").unwrap_or(1));
    let mut svg = format!(
        r#"<svg class="chart" id="chart-origins" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>Origins over time</title>"#
    );
    if let Some(al) = &a.alert {
        let (x0, x1) = (x_of(al.start.clamp(first, last)), x_of(al.end.clamp(first, last)));
        let _ = write!(
            svg,
            r##"<rect class="alert-window" x="{x0:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="#e15759" fill-opacity="0.15"/>"##,
            (x1 - x0).max(1.0),
            lane * origins.len() as f64
        );
    }
    svg.push_str(r#"<g class="marks">"#);
    for (i, (o, f, l)) in origins.iter().enumerate() {
        let y = top + lane * i as f64 + lane / 2.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            left - 8.0,
            y + 4.0,
            esc(o)
        );
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#999" stroke-width="1"/>"##,
            x_of(*f),
            x_of(*l).max(x_of(*f) + 1.0)
        );
        for r in tl.rows.iter().filter(|r| text(&r[toi]) == *o) {
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="8" fill="#4e79a7"/>"##,
                x_of(int(&r[thi])),
                y - 4.0,
                (pw * HOUR as f64 / (last - first) as f64).max(1.5)
            );
        }
        let _ = write!(
            svg,
            r##"<circle class="first-seen" cx="{:.1}" cy="{y:.1}" r="5" fill="#e15759"><title>{} first seen {}</title></circle>"##,
            x_of(*f),
            esc(o),
            format_rfc3339(*f)
        );
    }
    svg.push_str("</g>");
    let yb = top + lane * origins.len() as f64 + 18.0;
    let _ = write!(
        svg,
        r#"<text x="{left}" y="{yb}" font-size="11">{}</text><text x="{}" y="{yb}" font-size="11" text-anchor="end">{}</text>"#,
        esc(&day_label(first)),
        left + pw,
        esc(&day_label(last))
    );
    svg.push_str("</svg>");
    svg
}

/// The credentials that read the most.
fn credentials_chart(a: &Answers) -> String {
    let Some(t) = table_named(a, "credentials") else { return String::new() };
    let (ai, ci, bi) =
        (t.column("account").unwrap_or(0), t.column("credential").unwrap_or(1), t.column("bytes").unwrap_or(2));
    let rows: Vec<&Vec<Value>> = t.rows.iter().take(10).collect();
    if rows.is_empty() {
        return "<p>No credentials in the period.</p>".into();
    }
    let max = rows.iter().map(|r| int(&r[bi])).max().unwrap_or(1).max(1) as f64;
    let (bar, left, w) = (22.0, 330.0, 960.0);
    let h = bar * rows.len() as f64 + 10.0;
    let pw = w - left - 110.0;
    let mut svg = format!(
        r#"<svg class="chart" id="chart-credentials" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>Top credentials by bytes</title><g class="marks">"#
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 5.0 + bar * i as f64;
        let b = int(&r[bi]);
        let bw = (b as f64 / max * pw).max(1.0);
        let label = format!("{} / {}", text(&r[ai]), text(&r[ci]));
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"#,
            left - 8.0,
            y + 15.0,
            esc(&label)
        );
        let _ = write!(
            svg,
            r##"<rect x="{left}" y="{y:.1}" width="{bw:.1}" height="{:.1}" fill="#4e79a7"><title>{}: {}</title></rect>"##,
            bar - 6.0,
            esc(&label),
            human_bytes(b as u64)
        );
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            left + bw + 6.0,
            y + 15.0,
            human_bytes(b as u64)
        );
    }
    svg.push_str("</g></svg>");
    svg
}

fn html_table(t: &Table, limit: usize) -> String {
    let mut s = format!(r#"<h2>{}</h2><table id="table-{}"><thead><tr>"#, esc(&t.title), t.name);
    for c in &t.columns {
        let _ = write!(s, "<th>{}</th>", esc(c));
    }
    s.push_str("</tr></thead><tbody>");
    for r in t.rows.iter().take(limit) {
        s.push_str("<tr>");
        for (c, v) in t.columns.iter().zip(r) {
            let cell = match (c.as_str(), v) {
                ("bytes", Value::Int(b)) => format!(r#"<td class="num" title="{b}">{}</td>"#, human_bytes(*b as u64)),
                (_, Value::Int(i)) => format!(r#"<td class="num">{i}</td>"#),
                _ => format!("<td>{}</td>", esc(&text(v))),
            };
            s.push_str(&cell);
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    if t.rows.len() > limit {
        let _ = write!(s, "<p>{} more rows (all of them in --format csv/json/parquet).</p>", t.rows.len() - limit);
    }
    s
}

/// The report page.
pub fn render(a: &Answers, title: &str) -> String {
    let f = &a.filters;
    let mut scope = Vec::new();
    if let Some(x) = &f.account {
        scope.push(format!("account {x}"));
    }
    if let Some(x) = &f.credential {
        scope.push(format!("credential {x}"));
    }
    if let Some(x) = &f.ip {
        scope.push(format!("ip {x}"));
    }
    if let Some(x) = &f.cidr {
        scope.push(format!("network {}/{}", x.net, x.len));
    }
    if let Some(x) = f.since {
        scope.push(format!("since {}", format_rfc3339(x)));
    }
    if let Some(x) = f.until {
        scope.push(format!("until {}", format_rfc3339(x)));
    }
    if let Some(al) = &a.alert {
        scope.push(format!("alert {} ({} .. {})", al.id, format_rfc3339(al.start), format_rfc3339(al.end)));
    }
    let scope = if scope.is_empty() { "all requests".to_string() } else { scope.join(", ") };
    let mut body = String::new();
    let _ = write!(body, "<h1>{}</h1><p class=\"scope\">{}</p>", esc(title), esc(&scope));
    body.push_str(r#"<div id="page-errors"></div>"#);
    body.push_str("<h2>Bytes per hour, by origin</h2>");
    body.push_str(&stacked_chart(a));
    body.push_str("<h2>Origins over time (red: first seen)</h2>");
    body.push_str(&lanes_chart(a));
    body.push_str("<h2>Top credentials</h2>");
    body.push_str(&credentials_chart(a));
    for t in &a.tables {
        if t.name != "timeline" {
            body.push_str(&html_table(t, 200));
        }
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script>
window.addEventListener("error", function (e) {{
  var p = document.getElementById("page-errors");
  if (p) {{ var d = document.createElement("div"); d.className = "page-error"; d.textContent = String(e.message); p.appendChild(d); }}
}});
window.addEventListener("load", function () {{
  document.querySelectorAll("svg.chart").forEach(function (svg) {{
    var g = svg.querySelector("g.marks");
    var box = g ? g.getBBox() : {{ width: 0, height: 0 }};
    svg.setAttribute("data-drawn-width", Math.round(box.width));
    svg.setAttribute("data-drawn-height", Math.round(box.height));
    svg.setAttribute("data-marks", g ? g.querySelectorAll("rect,circle").length : 0);
  }});
  document.body.setAttribute("data-checked", "yes");
}});
</script>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.legend span {{ margin-right: 14px; font-size: 12px; }}
.legend i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
#page-errors {{ color: #b00; }}
</style></head><body>
{body}
</body></html>
"#,
        title = esc(title),
        body = body
    )
}
