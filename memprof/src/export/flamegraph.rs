//! SVG flame graphs of folded stacks, rendered in-process with inferno.
use anyhow::Context as _;
use inferno::flamegraph::{
    self,
    color::{BasicPalette, Palette},
};

use super::xml_escape;

/// Whether folded text has at least one stack with a count above zero.
fn has_counts(folded: &str) -> bool {
    folded.lines().map(str::trim).any(|line| {
        !line.is_empty()
            && !line.starts_with("# ")
            && line
                .rsplit_once(' ')
                .and_then(|(_, n)| n.parse::<f64>().ok())
                .is_some_and(|n| n > 0.0)
    })
}

/// The SVG for a profile with nothing in it (inferno refuses to draw one).
fn empty_svg(title: &str) -> String {
    format!(
        concat!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n",
            "<svg version=\"1.1\" width=\"1200\" height=\"80\" viewBox=\"0 0 1200 80\" ",
            "xmlns=\"http://www.w3.org/2000/svg\">\n",
            "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#eef2ee\"/>\n",
            "<text x=\"50%\" y=\"24\" text-anchor=\"middle\" font-family=\"monospace\" ",
            "font-size=\"17\">{}</text>\n",
            "<text x=\"50%\" y=\"56\" text-anchor=\"middle\" font-family=\"monospace\" ",
            "font-size=\"12\">no samples</text>\n",
            "</svg>\n"
        ),
        xml_escape(title)
    )
}

/// Renders folded stacks (see [`folded`]) as an SVG flame graph with inferno's memory
/// palette, `subtitle` under the title. `count_name` names the unit of the counts ("bytes",
/// "faults"). Colours are deterministic (a function keeps its colour across runs). Frames
/// narrower than 0.1% of the total are left out. Input without any count gives a small SVG
/// saying "no samples".
pub fn flamegraph_svg(
    folded: &str,
    title: &str,
    subtitle: &str,
    count_name: &str,
) -> anyhow::Result<String> {
    if !has_counts(folded) {
        return Ok(empty_svg(title));
    }
    let mut options = flamegraph::Options::default();
    options.colors = Palette::Basic(BasicPalette::Mem);
    options.title = title.to_string();
    options.subtitle = Some(subtitle.to_string());
    options.count_name = count_name.to_string();
    options.deterministic = true;
    options.min_width = 0.1;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
        .context("rendering the flame graph")?;
    String::from_utf8(svg).context("the flame graph is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::{Metric, folded, test_support::site},
        testing::assert_snapshot,
    };

    fn assert_svg(svg: &str, title: &str) {
        assert!(svg.starts_with("<?xml"), "{svg}");
        let open = svg.find("<svg").expect("no <svg");
        let close = svg.rfind("</svg>").expect("no </svg>");
        assert!(open < close);
        assert!(svg[close + "</svg>".len()..].trim().is_empty());
        assert!(svg.contains(title), "title {title:?} missing");
    }

    const FOLDED: &str = "\
memprof-workload (1234);_start;main;alloc::vec::Vec<T>::reserve;malloc;mmap 1073741824
memprof-workload (1234);_start;main;runtime.sysReserve;mmap 268435456
memprof-workload (1234);_start;main;std::thread::spawn;pthread_create;mmap 8392704
memprof-workload (1234);_start;_dl_start;mmap 4096
memprof-workload (1234);_start;main;tiny 100
";

    #[test]
    fn flamegraph_snapshot() {
        let title = "memprof: reserved & mapped";
        let svg = flamegraph_svg(FOLDED, title, "lost events: 0", "bytes").unwrap();
        assert_svg(&svg, "memprof: reserved &amp; mapped");
        for name in [
            "runtime.sysReserve",
            "pthread_create",
            "memprof-workload (1234)",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(svg.contains("bytes"));
        // Under min_width (0.1%): not drawn.
        assert!(!svg.contains(">tiny"));
        assert_snapshot("export_flamegraph.svg", &svg);
        // Same input, same bytes: colours are deterministic.
        assert_eq!(
            svg,
            flamegraph_svg(FOLDED, title, "lost events: 0", "bytes").unwrap()
        );
    }

    #[test]
    fn flamegraph_of_nothing_is_a_valid_svg() {
        let svg = flamegraph_svg("", "memprof: <none>", "", "bytes").unwrap();
        assert_svg(&svg, "memprof: &lt;none&gt;");
        assert!(svg.contains("no samples"));
        assert_snapshot("export_flamegraph_empty.svg", &svg);
        assert_eq!(
            flamegraph_svg("a;b 0\n\n", "memprof: <none>", "", "bytes").unwrap(),
            svg
        );
        let folded = folded(&[site(&[], Some("p"), 0)], Metric::Faults);
        assert_eq!(
            flamegraph_svg(&folded, "t", "", "faults").unwrap(),
            empty_svg("t")
        );
    }
}
