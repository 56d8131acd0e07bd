//! Reserved, committed and resident bytes over time, as an SVG step chart.
use std::fmt::Write as _;

use super::xml_escape;
use crate::{process::Sample, units::bytes};

/// One process's timeline for [`timeline_svg`].
pub struct Series<'a> {
    /// How the legend names it, e.g. "memprof-workload (1234)".
    pub name: &'a str,
    pub samples: &'a [Sample],
}

/// The three figures drawn, in drawing order, with their colours and widths: each line is
/// narrower than the one drawn before it, so that where two figures are equal (reserved
/// all committed, say) both stay visible, one inside the other.
const TIMELINE_METRICS: [(&str, &str, f64); 3] = [
    ("reserved", "#1f77b4", 7.0),
    ("committed", "#ff7f0e", 3.5),
    ("resident", "#2ca02c", 1.5),
];
/// Line styles telling processes apart (the colour tells the figure).
const TIMELINE_DASHES: [&str; 3] = ["", "12 5", "3 4"];
/// At most this many steps per line: a long trace's samples are thinned to it.
const MAX_STEPS: usize = 2000;
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 520.0;
/// A rough width of a char of the 12px sans-serif text, to lay the legend out.
const CHAR_WIDTH: f64 = 7.0;
const LINE_HEIGHT: f64 = 18.0;
/// A legend entry's width beside its text: the swatch, and space before the next entry.
const LEGEND_GAP: f64 = 60.0;

/// The round step (1, 2 or 5 times a power of ten) that cuts `span` into at most `ticks`.
fn tick_step(span: f64, ticks: f64) -> f64 {
    [1.0, 2.0, 5.0]
        .iter()
        .flat_map(|m| (-3..7).map(move |e| m * 10f64.powi(e)))
        .filter(|step| step * ticks >= span)
        .fold(f64::MAX, f64::min)
}

/// Legend entries laid out in rows from `left` to `right`: each entry's x and row.
fn legend_rows(widths: &[f64], left: f64, right: f64) -> Vec<(f64, usize)> {
    let mut x = left;
    let mut row = 0;
    widths
        .iter()
        .map(|&w| {
            if x > left && x + w > right {
                x = left;
                row += 1;
            }
            let at = (x, row);
            x += w;
            at
        })
        .collect()
}

/// "and 4 more: a (1), b (2), …", cut to `chars`.
fn left_out(series: &[&Series], chars: usize) -> String {
    let names: Vec<&str> = series.iter().map(|s| s.name).collect();
    let text = format!("and {} more: {}", names.len(), names.join(", "));
    if text.chars().count() <= chars {
        return text;
    }
    let mut cut: String = text.chars().take(chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Reserved, committed and resident bytes over time, one line each per process (the first
/// three of `series` with two samples or more; the others are named under the legend), with
/// labelled axes in bytes and seconds, the time axis ending at the last sample drawn. A figure holds its value until the
/// next sample (a step, not a ramp). Each line is a `path` with id `FIGURE-INDEX` (e.g.
/// `reserved-0`).
pub fn timeline_svg(title: &str, series: &[Series]) -> String {
    let (w, h) = (WIDTH, HEIGHT);
    // A process seen at one instant only (a shell that ran for a tick) has no line to show:
    // those with a timeline go first, in the caller's order.
    let mut series: Vec<&Series> = series.iter().collect();
    series.sort_by_key(|s| s.samples.len() < 2);
    let (shown, omitted) = series.split_at(series.len().min(TIMELINE_DASHES.len()));

    // The legend first: it decides where the plot starts.
    let mut entries: Vec<(String, f64)> = TIMELINE_METRICS
        .iter()
        .map(|(metric, ..)| {
            (
                metric.to_string(),
                LEGEND_GAP + CHAR_WIDTH * metric.len() as f64,
            )
        })
        .collect();
    entries.extend(shown.iter().map(|s| {
        let name = xml_escape(s.name);
        let width = LEGEND_GAP + CHAR_WIDTH * s.name.chars().count() as f64;
        (name, width)
    }));
    let (left, right, bottom) = (90.0, 20.0, 50.0);
    let widths: Vec<f64> = entries.iter().map(|(_, w)| *w).collect();
    let places = legend_rows(&widths, left, w - right);
    let legend_lines =
        places.last().map_or(0, |&(_, row)| row + 1) + usize::from(!omitted.is_empty());
    let top = 50.0 + LINE_HEIGHT * legend_lines as f64 + 10.0;

    // Time counts from the first sample of any process, the one tracing began with.
    let t0 = series
        .iter()
        .flat_map(|s| s.samples.first())
        .map(|s| s.monotonic_ns)
        .min()
        .unwrap_or(0);
    let samples = || shown.iter().flat_map(|s| s.samples.iter());
    let end = samples().map(|s| s.monotonic_ns - t0).max().unwrap_or(0) as f64 / 1e9;
    // The axis ends at the last sample; a single instant gets a second.
    let t_max = if end > 0.0 { end } else { 1.0 };
    let t_step = tick_step(t_max, 8.0);
    let peak = samples()
        .map(|s| s.reserved.max(s.committed).max(s.resident))
        .max()
        .unwrap_or(0);
    let y_step = peak.div_ceil(4).max(1).next_power_of_two();
    let y_ticks = peak.div_ceil(y_step).max(1);
    let y_max = (y_step * y_ticks) as f64;
    let (x0, x1, y0, y1) = (left, w - right, h - bottom, top);
    let x = |ns: u64| x0 + (ns - t0) as f64 / 1e9 / t_max * (x1 - x0);
    let y = |bytes: u64| y0 - bytes as f64 / y_max * (y0 - y1);

    let mut svg = String::new();
    // A title too long for the canvas is squeezed into it rather than cut.
    let title_width = 8.5 * title.chars().count() as f64;
    let squeeze = if title_width > w - 20.0 {
        format!(
            r#" textLength="{}" lengthAdjust="spacingAndGlyphs""#,
            w - 20.0
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="16"{squeeze}>{}</text>"#,
        w / 2.0,
        xml_escape(title)
    );
    // Axes, ticks and grid.
    let _ = writeln!(
        svg,
        r##"<path id="axes" d="M{x0} {y1} V{y0} H{x1}" stroke="black" fill="none"/>
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
    let ticks = (t_max / t_step + 1e-9).floor() as u32;
    for i in 0..=ticks {
        let second = t_step * f64::from(i);
        let tx = x0 + second / t_max * (x1 - x0);
        let _ = writeln!(
            svg,
            r#"<line x1="{tx:.1}" y1="{y0}" x2="{tx:.1}" y2="{}" stroke="black"/><text x="{tx:.1}" y="{}" text-anchor="middle">{second:.decimals$}</text>"#,
            y0 + 5.0,
            y0 + 18.0,
        );
    }
    // Lines, widest first.
    for (index, s) in shown.iter().enumerate() {
        let thin = s.samples.len().div_ceil(MAX_STEPS).max(1);
        let points: Vec<&Sample> = s.samples.iter().step_by(thin).collect();
        let Some(&thinned_last) = points.last() else {
            continue;
        };
        // The last sample ends the line wherever thinning fell.
        let last = s.samples.last().filter(|&l| !std::ptr::eq(l, thinned_last));
        // A lone sample shows as a dot: a round cap on a line of no length. Lines keep
        // square ends, which keep their dashes apart.
        let cap = if s.samples.len() == 1 {
            "round"
        } else {
            "butt"
        };
        for (metric, colour, width) in TIMELINE_METRICS {
            let value = |sample: &Sample| match metric {
                "reserved" => sample.reserved,
                "committed" => sample.committed,
                _ => sample.resident,
            };
            let mut d = String::new();
            for (i, sample) in points.iter().copied().chain(last).enumerate() {
                let (px, py) = (x(sample.monotonic_ns), y(value(sample)));
                if i == 0 {
                    let _ = write!(d, "M{px:.1} {py:.1} h0");
                } else {
                    let _ = write!(d, " H{px:.1} V{py:.1}");
                }
            }
            let _ = writeln!(
                svg,
                r#"<path id="{metric}-{index}" d="{d}" fill="none" stroke="{colour}" stroke-width="{width}" stroke-linecap="{cap}" stroke-dasharray="{}"/>"#,
                TIMELINE_DASHES[index]
            );
        }
    }
    // The legend, inside the canvas: figures by colour and width, processes by dash.
    let swatches = TIMELINE_METRICS
        .iter()
        .map(|&(_, colour, width)| (colour, width, ""))
        .chain(TIMELINE_DASHES.iter().map(|&dash| ("black", 2.0, dash)));
    for (((label, _), (lx, row)), (colour, width, dash)) in entries.iter().zip(places).zip(swatches)
    {
        let ly = 50.0 + LINE_HEIGHT * row as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="{width}" stroke-dasharray="{dash}"/><text x="{}" y="{}">{label}</text>"#,
            lx + 30.0,
            lx + 36.0,
            ly + 4.0,
        );
    }
    if !omitted.is_empty() {
        let chars = ((w - right - left) / CHAR_WIDTH) as usize;
        let _ = writeln!(
            svg,
            r#"<text id="left-out" x="{left}" y="{}">{}</text>"#,
            50.0 + LINE_HEIGHT * (legend_lines - 1) as f64 + 4.0,
            xml_escape(&left_out(omitted, chars))
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_snapshot;

    const MIB: u64 = 1 << 20;

    fn sample(ms: u64, reserved: u64, committed: u64, resident: u64) -> Sample {
        Sample {
            monotonic_ns: 5_000_000_000 + ms * 1_000_000,
            reserved: reserved * MIB,
            committed: committed * MIB,
            resident: resident * MIB,
        }
    }

    /// The line of the element with `id`.
    fn element<'a>(svg: &'a str, id: &str) -> &'a str {
        svg.lines()
            .find(|l| l.contains(&format!(r#"id="{id}""#)))
            .unwrap_or_else(|| panic!("no {id}"))
    }

    /// The numbers in the first `attribute` of an element's line.
    fn numbers(element: &str, attribute: &str) -> Vec<f64> {
        let value = element
            .split(&format!(r#" {attribute}=""#))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no {attribute} in {element}"));
        value
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|n| !n.is_empty())
            .map(|n| n.parse().unwrap())
            .collect()
    }

    #[test]
    fn timeline_snapshot() {
        let first = [
            sample(0, 1, 1, 0),
            sample(100, 1024, 1, 0),
            sample(200, 1024, 256, 64),
            sample(300, 880, 256, 48),
            // Reserved all committed: both lines must show.
            sample(900, 880, 880, 300),
            sample(1700, 880, 880, 300),
        ];
        let second = [sample(50, 10, 10, 5), sample(250, 40, 40, 30)];
        let third = [sample(400, 300, 300, 100)];
        let fourth = [sample(0, 1, 1, 1)];
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
                Series {
                    name: "grandchild (3)",
                    samples: &third,
                },
                Series {
                    name: "sh <4>",
                    samples: &fourth,
                },
                Series {
                    name: "sleep (5)",
                    samples: &fourth,
                },
            ],
        );
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        for label in [
            "seconds since tracing began",
            "bytes",
            "1.0 GiB",
            "reserved-2",
            "and 2 more: sh &lt;4&gt;, sleep (5)",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(!svg.contains("reserved-3"));

        // The time axis ends at the last sample (1.7 s), within 10% of it.
        let axes = numbers(element(&svg, "axes"), "d");
        let (x0, x_end) = (axes[0], axes[3]);
        let line = numbers(element(&svg, "reserved-0"), "d");
        let last_x = line[line.len() - 2];
        assert!(
            (x_end - last_x).abs() <= 0.1 * (x_end - x0),
            "axis ends at {x_end}, the data at {last_x}"
        );
        assert!(svg.contains(">1.5</text>") && !svg.contains(">2.0</text>"));

        // Steps, not ramps: every move is horizontal, then vertical.
        let d = element(&svg, "committed-0");
        assert_eq!(d.matches(" H").count(), first.len() - 1, "{d}");
        assert_eq!(d.matches(" V").count(), first.len() - 1, "{d}");
        assert!(!d.contains(" L"), "{d}");

        // Reserved equal to committed at the end stays visible: drawn wider, underneath.
        let width = |id| numbers(element(&svg, id), "stroke-width")[0];
        assert!(width("reserved-0") > width("committed-0"));
        assert!(width("committed-0") > width("resident-0"));
        let position = |id: &str| svg.find(&format!(r#"id="{id}""#)).unwrap();
        assert!(position("reserved-0") < position("committed-0"));

        // The legend lies inside the canvas.
        for line in svg.lines().filter(|l| l.contains("<text")) {
            let x = numbers(line.split("<text").nth(1).unwrap(), "x")[0];
            assert!((0.0..=WIDTH).contains(&x), "{line}");
        }
        assert_snapshot("export_timeline.svg", &svg);
    }

    #[test]
    fn processes_with_a_timeline_come_before_those_seen_once() {
        let once = [sample(0, 1, 1, 1)];
        let long = [sample(200, 1, 1, 1), sample(700, 2, 2, 2)];
        let series = |name, samples| Series { name, samples };
        let svg = timeline_svg(
            "t",
            &[
                series("a", &once[..]),
                series("b", &once[..]),
                series("c", &once[..]),
                series("d", &long[..]),
            ],
        );
        assert!(element(&svg, "reserved-0").contains(" H"), "{svg}");
        assert!(!element(&svg, "reserved-1").contains(" H"), "{svg}");
        assert!(
            element(&svg, "left-out").contains(">and 1 more: c<"),
            "{svg}"
        );
        // Time counts from the first sample of any process: "d" starts at 0.2 s.
        let axes = numbers(element(&svg, "axes"), "d");
        let line = numbers(element(&svg, "reserved-0"), "d");
        let (x0, x_end, start) = (axes[0], axes[3], line[0]);
        assert!((start - x0 - 0.2 / 0.7 * (x_end - x0)).abs() < 1.0, "{svg}");
    }

    #[test]
    fn a_long_legend_wraps_and_a_long_list_of_others_is_cut() {
        let long = "x".repeat(60);
        let names: Vec<String> = (0..40).map(|i| format!("{long} ({i})")).collect();
        let samples = [sample(0, 1, 1, 1), sample(10, 2, 2, 2)];
        let series: Vec<Series> = names
            .iter()
            .map(|name| Series {
                name,
                samples: &samples,
            })
            .collect();
        let svg = timeline_svg("t", &series);
        let other = element(&svg, "left-out");
        assert!(
            other.contains("and 37 more: ") && other.contains('…'),
            "{other}"
        );
        // Each legend entry's text ends inside the canvas.
        for line in svg.lines().filter(|l| l.contains(&long)) {
            let x = numbers(line.split("<text").nth(1).unwrap(), "x")[0];
            let text = line
                .rsplit_once("\">")
                .unwrap()
                .1
                .trim_end_matches("</text>");
            let chars = text.chars().count() as f64;
            assert!(x + CHAR_WIDTH * chars <= WIDTH + CHAR_WIDTH, "{line}");
        }
    }
}
