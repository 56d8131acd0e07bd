//! Reserved, committed and resident bytes over time, as an SVG line chart.
use std::fmt::Write as _;

use super::xml_escape;
use crate::{process::Sample, units::bytes};

/// One process's timeline for [`timeline_svg`].
pub struct Series<'a> {
    /// How the legend names it, e.g. "memprof-workload (1234)".
    pub name: &'a str,
    pub samples: &'a [Sample],
}

/// The three figures drawn, with their colours.
const TIMELINE_METRICS: [(&str, &str); 3] = [
    ("reserved", "#1f77b4"),
    ("committed", "#ff7f0e"),
    ("resident", "#2ca02c"),
];
/// Line styles telling processes apart (the colour tells the figure).
const TIMELINE_DASHES: [&str; 3] = ["", "8 4", "2 3"];

/// Reserved, committed and resident bytes over time, one line each per process (at most
/// three: pass the ones that matter), with labelled axes in bytes and seconds and a legend.
/// Each line is a `polyline` with id `FIGURE-INDEX` (e.g. `reserved-0`).
pub fn timeline_svg(title: &str, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (960.0, 480.0, 90.0, 20.0, 70.0, 50.0_f64);
    let series = &series[..series.len().min(TIMELINE_DASHES.len())];
    let samples = || series.iter().flat_map(|s| s.samples.iter());
    let t0 = samples().map(|s| s.monotonic_ns).min().unwrap_or(0);
    // Four ticks per axis at round values: a power of two of bytes, 1/2/5 x 10^k seconds.
    let seconds = samples().map(|s| s.monotonic_ns - t0).max().unwrap_or(0) as f64 / 1e9;
    let t_step = [1.0, 2.0, 5.0]
        .iter()
        .flat_map(|m| (-3..4).map(move |e| m * 10f64.powi(e)))
        .filter(|step| step * 4.0 >= seconds)
        .fold(f64::MAX, f64::min);
    let t_max = t_step * 4.0;
    let peak = samples()
        .map(|s| s.reserved.max(s.resident))
        .max()
        .unwrap_or(0);
    let y_step = peak.div_ceil(4).max(1).next_power_of_two();
    let y_ticks = peak.div_ceil(y_step).max(1);
    let y_max = (y_step * y_ticks) as f64;
    let x = |ns: u64| left + (ns - t0) as f64 / 1e9 / t_max * (w - left - right);
    let y = |bytes: u64| h - bottom - bytes as f64 / y_max * (h - top - bottom);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="16">{}</text>"#,
        w / 2.0,
        xml_escape(title)
    );
    // Axes, ticks and grid.
    let (x0, x1, y0, y1) = (left, w - right, h - bottom, top);
    let _ = writeln!(
        svg,
        r##"<path d="M{x0} {y1} V{y0} h{x1}" stroke="black" fill="none"/>
<text x="{}" y="{}" text-anchor="middle">seconds since tracing began</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">bytes</text>"##,
        (x0 + x1) / 2.0,
        h - 12.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
    );
    for i in 0..=y_ticks {
        let ty = y(i * y_step);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{ty:.1}" x2="{x1}" y2="{ty:.1}" stroke="#ddd"/>
<text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            ty + 4.0,
            bytes(i * y_step),
        );
    }
    // As many decimals as the step has: 0.1 s steps print "0.3", not 0.30000000000000004.
    let decimals = (-t_step.log10().floor()).max(0.0) as usize;
    for i in 0..=4 {
        let second = t_step * f64::from(i);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{second:.decimals$}</text>"#,
            x0 + second / t_max * (x1 - x0),
            y0 + 18.0,
        );
    }
    // Lines, then the legend.
    for (index, s) in series.iter().enumerate() {
        let step = s.samples.len().div_ceil(2000).max(1);
        for (metric, colour) in TIMELINE_METRICS {
            let mut points = String::new();
            for sample in s.samples.iter().step_by(step).chain(s.samples.last()) {
                let value = match metric {
                    "reserved" => sample.reserved,
                    "committed" => sample.committed,
                    _ => sample.resident,
                };
                let _ = write!(points, "{:.1},{:.1} ", x(sample.monotonic_ns), y(value));
            }
            let _ = writeln!(
                svg,
                r#"<polyline id="{metric}-{index}" points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{}"/>"#,
                points.trim_end(),
                TIMELINE_DASHES[index]
            );
        }
    }
    let mut lx = left;
    for (metric, colour) in TIMELINE_METRICS {
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="40" x2="{}" y2="40" stroke="{colour}" stroke-width="3"/><text x="{}" y="44">{metric}</text>"#,
            lx + 24.0,
            lx + 30.0
        );
        lx += 110.0;
    }
    for (s, dash) in series.iter().zip(TIMELINE_DASHES) {
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="40" x2="{}" y2="40" stroke="black" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="44">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            xml_escape(s.name)
        );
        lx += 40.0 + 7.0 * s.name.chars().count() as f64;
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_snapshot;

    #[test]
    fn timeline_snapshot() {
        let sample = |ms: u64, reserved: u64, committed: u64, resident: u64| Sample {
            monotonic_ns: 5_000_000_000 + ms * 1_000_000,
            reserved: reserved << 20,
            committed: committed << 20,
            resident: resident << 20,
        };
        let first = [
            sample(0, 1, 1, 0),
            sample(100, 1024, 1, 0),
            sample(200, 1024, 256, 64),
            sample(300, 880, 256, 48),
        ];
        let second = [sample(50, 10, 10, 5), sample(250, 40, 40, 30)];
        let svg = timeline_svg(
            "memory over time: a <b> & c",
            &[
                Series {
                    name: "workload (1)",
                    samples: &first,
                },
                Series {
                    name: "child (2)",
                    samples: &second,
                },
            ],
        );
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        for label in [
            "seconds since tracing began",
            "bytes",
            "1.0 GiB",
            "reserved-1",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert_snapshot("export_timeline.svg", &svg);
    }
}
