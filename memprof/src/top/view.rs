//! What `memprof top` shows, as pure functions of the figures and the keys pressed, so that
//! it is unit- and snapshot-tested without a terminal.
use std::collections::HashMap;
use std::fmt::Write as _;

use crate::units::bytes;

/// One process's figures at one refresh, as the session knows them.
#[derive(Clone, Debug)]
pub struct Figures {
    pub pid: u32,
    pub command: String,
    pub cgroup: String,
    /// Address space (VSZ), in bytes.
    pub reserved: u64,
    /// Resident set (RSS), in bytes.
    pub resident: u64,
    /// Page faults since the process was first traced (cumulative).
    pub faults: u64,
    pub exited: bool,
}

/// A process's row: levels and rates since the previous refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub pid: u32,
    pub command: String,
    pub cgroup: String,
    pub reserved: u64,
    pub resident: u64,
    /// Bytes per second, negative when the address space shrinks.
    pub reserved_rate: f64,
    /// Bytes per second, negative when the resident set shrinks.
    pub resident_rate: f64,
    /// Page faults per second.
    pub faults_rate: f64,
    pub exited: bool,
}

/// What the rows are sorted by, fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// By reserved (address space) growth
    Reserved,
    /// By resident (RSS) growth
    Resident,
    /// By page fault rate
    Faults,
}

impl SortKey {
    fn describe(self) -> &'static str {
        match self {
            SortKey::Reserved => "reserved growth",
            SortKey::Resident => "resident growth",
            SortKey::Faults => "fault rate",
        }
    }

    /// The rate sorted on, then the level that breaks ties.
    fn figures(self, row: &Row) -> (f64, f64) {
        match self {
            SortKey::Reserved => (row.reserved_rate, row.reserved as f64),
            SortKey::Resident => (row.resident_rate, row.resident as f64),
            // Faults make pages resident, so among equal fault rates the larger resident
            // set comes first.
            SortKey::Faults => (row.faults_rate, row.resident as f64),
        }
    }
}

/// The figures of one pid at the previous refresh.
struct Previous {
    at_ns: u64,
    reserved: u64,
    resident: u64,
    faults: u64,
}

/// Turns cumulative figures into rates: remembers the previous refresh by pid.
#[derive(Default)]
pub struct Rates {
    previous: HashMap<u32, Previous>,
}

impl Rates {
    /// Rates that know no previous refresh yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows for the figures at `now_ns` (any monotonic clock), with rates over the time since
    /// each pid's previous update. A pid seen for the first time has rates 0 until the next
    /// update; pids absent from `figures` are forgotten.
    pub fn update(&mut self, now_ns: u64, figures: Vec<Figures>) -> Vec<Row> {
        let mut previous = HashMap::with_capacity(figures.len());
        let rows = figures
            .into_iter()
            .map(|f| {
                let (reserved_rate, resident_rate, faults_rate) = match self.previous.get(&f.pid) {
                    Some(p) if now_ns > p.at_ns => {
                        let secs = (now_ns - p.at_ns) as f64 / 1e9;
                        let delta = |now: u64, then: u64| (now as i128 - then as i128) as f64;
                        (
                            delta(f.reserved, p.reserved) / secs,
                            delta(f.resident, p.resident) / secs,
                            // A pid reused by a new process starts its count again: no
                            // negative fault rate.
                            f.faults.saturating_sub(p.faults) as f64 / secs,
                        )
                    }
                    _ => (0.0, 0.0, 0.0),
                };
                previous.insert(
                    f.pid,
                    Previous {
                        at_ns: now_ns,
                        reserved: f.reserved,
                        resident: f.resident,
                        faults: f.faults,
                    },
                );
                Row {
                    pid: f.pid,
                    command: f.command,
                    cgroup: f.cgroup,
                    reserved: f.reserved,
                    resident: f.resident,
                    reserved_rate,
                    resident_rate,
                    faults_rate,
                    exited: f.exited,
                }
            })
            .collect();
        self.previous = previous;
        rows
    }
}

/// Sorts descending by the key's rate, then by its level (resident for the fault rate),
/// then by pid, so that the order does not flicker between equal rows.
pub fn sort(rows: &mut [Row], key: SortKey) {
    rows.sort_by(|a, b| {
        let (rate_a, level_a) = key.figures(a);
        let (rate_b, level_b) = key.figures(b);
        rate_b
            .total_cmp(&rate_a)
            .then(level_b.total_cmp(&level_a))
            .then(a.pid.cmp(&b.pid))
    });
}

/// What the caller should do after a key press.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The view changed: draw it again now rather than at the next refresh.
    Redraw,
    Quit,
    None,
}

const CTRL_C: u8 = 0x03;
const BACKSPACE: u8 = 0x08;
const DELETE: u8 = 0x7f;
const ESC: u8 = 0x1b;

/// The user's choices: sort key and filter, changed by keys read from a raw-mode terminal.
#[derive(Clone, Debug)]
pub struct View {
    pub sort: SortKey,
    /// Case-insensitive substring of the command, cgroup or pid; empty shows every row.
    pub filter: String,
    /// Keys go to the filter text rather than being commands.
    editing: bool,
}

impl View {
    /// Sorted by `sort`, with no filter.
    pub fn new(sort: SortKey) -> Self {
        Self {
            sort,
            filter: String::new(),
            editing: false,
        }
    }

    /// Handles one byte read from the terminal in raw mode.
    pub fn key(&mut self, key: u8) -> Action {
        if key == CTRL_C {
            return Action::Quit;
        }
        if self.editing {
            match key {
                b'\r' | b'\n' => self.editing = false,
                ESC => {
                    self.editing = false;
                    self.filter.clear();
                }
                BACKSPACE | DELETE => {
                    self.filter.pop();
                }
                // Bytes of multibyte characters are dropped rather than pushed one by one,
                // which would make mojibake; commands are ASCII in practice.
                b' '..=b'~' => self.filter.push(char::from(key)),
                _ => return Action::None,
            }
            return Action::Redraw;
        }
        match key {
            b'q' => return Action::Quit,
            b'r' => self.sort = SortKey::Reserved,
            b'm' | b'M' => self.sort = SortKey::Resident,
            b'f' => self.sort = SortKey::Faults,
            // The current filter is kept, so it can be refined rather than typed again.
            b'/' => self.editing = true,
            ESC if !self.filter.is_empty() => self.filter.clear(),
            _ => return Action::None,
        }
        Action::Redraw
    }

    /// The rows that match the filter, in their order.
    pub fn visible<'a>(&self, rows: &'a [Row]) -> impl Iterator<Item = &'a Row> {
        let needle = self.filter.to_lowercase();
        rows.iter().filter(move |row| {
            needle.is_empty()
                || row.command.to_lowercase().contains(&needle)
                || row.cgroup.to_lowercase().contains(&needle)
                || row.pid.to_string().contains(&needle)
        })
    }
}

/// The figures about the whole session shown above the rows.
#[derive(Clone, Debug)]
pub struct Header {
    pub elapsed_secs: f64,
    /// Processes traced now (exited ones excluded).
    pub processes: usize,
    /// Events the kernel could not deliver: shown always, since any figure may be off.
    pub lost_events: u64,
    pub refresh_secs: f64,
}

/// Right-aligned figure columns after COMMAND and CGROUP: title and width. The widths fit the
/// widest values: "1023.9 KiB" and "+1023.9 KiB/s".
const NUMBER_COLUMNS: [(&str, usize); 5] = [
    ("RESERVED", 10),
    ("RESERVED/s", 13),
    ("RESIDENT", 10),
    ("RESIDENT/s", 13),
    ("FAULTS/s", 9),
];
const PID_WIDTH: usize = 7;
const COMMAND_MIN_WIDTH: usize = 8;
/// Below this leftover width CGROUP is left out, so that COMMAND stays readable on 80 columns.
const CGROUP_MIN_LEFTOVER: usize = 24;
const BATCH_COMMAND_WIDTH: usize = 32;
const BATCH_CGROUP_WIDTH: usize = 32;
const EXITED: &str = " (exited)";

/// Widths of the text columns; no CGROUP column when `cgroup` is None.
struct Widths {
    command: usize,
    cgroup: Option<usize>,
}

impl Widths {
    fn for_screen(width: usize) -> Self {
        let fixed = PID_WIDTH + 1 + NUMBER_COLUMNS.iter().map(|(_, w)| w + 1).sum::<usize>();
        let leftover = width.saturating_sub(fixed);
        if leftover < CGROUP_MIN_LEFTOVER {
            return Widths {
                command: leftover.max(COMMAND_MIN_WIDTH),
                cgroup: None,
            };
        }
        // Two spaces between COMMAND and CGROUP; commands get the larger share, as they tell
        // processes apart.
        let cgroup = (leftover - 2) * 2 / 5;
        Widths {
            command: leftover - 2 - cgroup,
            cgroup: Some(cgroup),
        }
    }
}

/// Replaces control characters: a process chooses its own command name, and escape codes in
/// it would garble the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// At most `width` chars, ending with an ellipsis when cut.
fn cut_end(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        cut.push('…');
    }
    cut
}

/// At most `width` chars, starting with an ellipsis when cut: the end of a cgroup path names
/// the service or container.
fn cut_start(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_string();
    }
    let mut cut = String::from(if width > 0 { "…" } else { "" });
    cut.extend(text.chars().skip(count + 1 - width.max(1)));
    cut
}

/// The command cut to `width`, keeping the exited mark visible.
fn command_cell(row: &Row, width: usize) -> String {
    let command = printable(&row.command);
    if !row.exited {
        return cut_end(&command, width);
    }
    match width.checked_sub(EXITED.len()) {
        Some(room) if room > 0 => cut_end(&command, room) + EXITED,
        _ => cut_end(&format!("{command}{EXITED}"), width),
    }
}

/// A signed rate in binary units: "+1.5 MiB/s", "-4.0 KiB/s", "0 B/s".
fn bytes_rate(rate: f64) -> String {
    let magnitude = rate.abs().round() as u64;
    if magnitude == 0 {
        return "0 B/s".to_string();
    }
    let sign = if rate < 0.0 { '-' } else { '+' };
    format!("{sign}{}/s", bytes(magnitude))
}

/// One table line: cells already cut to their widths.
fn table_line(
    widths: &Widths,
    pid: &str,
    command: &str,
    cgroup: &str,
    numbers: &[String],
) -> String {
    let mut line = format!("{pid:>PID_WIDTH$} {command:<w$}", w = widths.command);
    if let Some(w) = widths.cgroup {
        let _ = write!(line, "  {cgroup:<w$}");
    }
    for (number, (_, w)) in numbers.iter().zip(NUMBER_COLUMNS) {
        let _ = write!(line, " {number:>w$}");
    }
    line
}

/// The column titles, the sorted one marked when `sorted` is given.
fn column_titles(widths: &Widths, sorted: Option<SortKey>) -> String {
    let sorted = sorted.map(|key| match key {
        SortKey::Reserved => "RESERVED/s",
        SortKey::Resident => "RESIDENT/s",
        SortKey::Faults => "FAULTS/s",
    });
    let numbers: Vec<String> = NUMBER_COLUMNS
        .iter()
        .map(|&(title, _)| {
            if sorted == Some(title) {
                format!("▼{title}")
            } else {
                title.to_string()
            }
        })
        .collect();
    table_line(widths, "PID", "COMMAND", "CGROUP", &numbers)
}

fn row_line(widths: &Widths, row: &Row) -> String {
    let cgroup = cut_start(&printable(&row.cgroup), widths.cgroup.unwrap_or(0));
    let numbers = [
        bytes(row.reserved),
        bytes_rate(row.reserved_rate),
        bytes(row.resident),
        bytes_rate(row.resident_rate),
        format!("{:.0}", row.faults_rate),
    ];
    table_line(
        widths,
        &row.pid.to_string(),
        &command_cell(row, widths.command),
        &cgroup,
        &numbers,
    )
}

fn processes(n: usize) -> String {
    format!("{n} process{}", if n == 1 { "" } else { "es" })
}

/// One whole frame for a `width` x `height` terminal: title, keys, column titles and as many
/// of the rows (sorted by the caller, filtered here) as fit. Lines are joined with "\r\n" for
/// raw mode, with no escape codes: clearing and positioning are the terminal's job.
pub fn render_screen(
    view: &View,
    header: &Header,
    rows: &[Row],
    width: u16,
    height: u16,
) -> String {
    let width = usize::from(width);
    let widths = Widths::for_screen(width);
    let visible: Vec<&Row> = view.visible(rows).collect();

    let mut title = format!(
        "memprof top  {:.1} s  {}  lost events: {}  refresh {:.1} s",
        header.elapsed_secs,
        processes(header.processes),
        header.lost_events,
        header.refresh_secs,
    );
    if !view.filter.is_empty() {
        let _ = write!(title, "  {} shown", visible.len());
    }

    // While editing, keys are filter text: the sort keys do not apply, so they make room
    // for how to end editing.
    let keys = if view.editing {
        format!(
            "filter: {}_  (Enter: keep, Esc: clear, Ctrl-C: quit)",
            view.filter
        )
    } else {
        let mut keys = String::from("sort:");
        for (sort, label) in [
            (SortKey::Reserved, "[r]eserved growth"),
            (SortKey::Resident, "[m] resident growth"),
            (SortKey::Faults, "[f]aults/s"),
        ] {
            let mark = if view.sort == sort { '▼' } else { ' ' };
            let _ = write!(keys, " {mark}{label}");
        }
        if view.filter.is_empty() {
            keys.push_str("   [/] filter  [q]uit");
        } else {
            let _ = write!(keys, "   [/] filter: {}  [q]uit", view.filter);
        }
        keys
    };

    let mut lines = vec![title, keys, column_titles(&widths, Some(view.sort))];
    let room = usize::from(height).saturating_sub(lines.len());
    if visible.is_empty() && room > 0 {
        lines.push(if view.filter.is_empty() {
            "  (no traced process)".to_string()
        } else {
            format!("  (no process matches \"{}\")", view.filter)
        });
    }
    lines.extend(visible.iter().take(room).map(|row| row_line(&widths, row)));
    lines.truncate(usize::from(height));
    lines
        .iter()
        .map(|line| cut_end(line, width))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// One plain-text block for logs and scripts: a title line, the column titles and the first
/// `limit` rows (in the caller's order, unfiltered), then an empty line. Commands and cgroups
/// are cut at fixed widths so that the columns line up.
pub fn render_batch(header: &Header, rows: &[Row], key: SortKey, limit: usize) -> String {
    let widths = Widths {
        command: BATCH_COMMAND_WIDTH,
        cgroup: Some(BATCH_CGROUP_WIDTH),
    };
    let mut out = format!(
        "memprof top  {:.1} s  {}  lost events: {}  sorted by {}\n",
        header.elapsed_secs,
        processes(header.processes),
        header.lost_events,
        key.describe(),
    );
    // Unmarked, so that scripts find the same titles whatever the sort: the first line
    // says it.
    out += &column_titles(&widths, None);
    out.push('\n');
    for row in rows.iter().take(limit) {
        out += &row_line(&widths, row);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_snapshot;

    const SEC: u64 = 1_000_000_000;
    const MIB: u64 = 1 << 20;

    fn figures(pid: u32, reserved: u64, resident: u64, faults: u64) -> Figures {
        Figures {
            pid,
            command: format!("cmd{pid}"),
            cgroup: "/system.slice/app.service".into(),
            reserved,
            resident,
            faults,
            exited: false,
        }
    }

    fn row(pid: u32, reserved_rate: f64, resident_rate: f64, faults_rate: f64) -> Row {
        Row {
            pid,
            command: format!("cmd{pid}"),
            cgroup: format!("/user.slice/session-{pid}.scope"),
            reserved: 100 * MIB,
            resident: 10 * MIB,
            reserved_rate,
            resident_rate,
            faults_rate,
            exited: false,
        }
    }

    fn pids<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Vec<u32> {
        rows.into_iter().map(|r| r.pid).collect()
    }

    #[test]
    fn rates_are_per_second_since_the_previous_update() {
        let mut rates = Rates::new();
        let first = rates.update(10 * SEC, vec![figures(1, 100 * MIB, 10 * MIB, 50)]);
        assert_eq!(first[0].reserved_rate, 0.0);
        assert_eq!(first[0].resident_rate, 0.0);
        assert_eq!(first[0].faults_rate, 0.0);

        // Two seconds later: reserved grew 4 MiB, resident shrank 2 MiB, 300 faults.
        let second = rates.update(12 * SEC, vec![figures(1, 104 * MIB, 8 * MIB, 350)]);
        assert_eq!(second[0].reserved, 104 * MIB);
        assert_eq!(second[0].reserved_rate, (2 * MIB) as f64);
        assert_eq!(second[0].resident_rate, -(MIB as f64));
        assert_eq!(second[0].faults_rate, 150.0);
    }

    #[test]
    fn a_new_pid_starts_at_zero_then_gets_real_rates() {
        let mut rates = Rates::new();
        rates.update(SEC, vec![figures(1, MIB, MIB, 0)]);
        let rows = rates.update(
            2 * SEC,
            vec![figures(1, MIB, MIB, 0), figures(2, 50 * MIB, MIB, 10)],
        );
        assert_eq!(rows[1].pid, 2);
        assert_eq!(rows[1].reserved_rate, 0.0);
        let rows = rates.update(
            3 * SEC,
            vec![figures(1, MIB, MIB, 0), figures(2, 60 * MIB, MIB, 30)],
        );
        assert_eq!(rows[1].reserved_rate, (10 * MIB) as f64);
        assert_eq!(rows[1].faults_rate, 20.0);
    }

    #[test]
    fn pids_absent_from_an_update_are_forgotten() {
        let mut rates = Rates::new();
        rates.update(
            SEC,
            vec![figures(1, MIB, MIB, 10), figures(2, MIB, MIB, 10)],
        );
        rates.update(2 * SEC, vec![figures(2, MIB, MIB, 10)]);
        // Pid 1 is back (reused, say): no rate against figures from before it went away.
        let rows = rates.update(3 * SEC, vec![figures(1, 90 * MIB, MIB, 5)]);
        assert_eq!(rows[0].reserved_rate, 0.0);
        assert_eq!(rates.previous.len(), 1);
    }

    #[test]
    fn no_rate_without_elapsed_time_and_no_negative_fault_rate() {
        let mut rates = Rates::new();
        rates.update(SEC, vec![figures(1, MIB, MIB, 10)]);
        let rows = rates.update(SEC, vec![figures(1, 2 * MIB, MIB, 20)]);
        assert_eq!(rows[0].reserved_rate, 0.0);
        let rows = rates.update(2 * SEC, vec![figures(1, 2 * MIB, MIB, 3)]);
        assert_eq!(rows[0].faults_rate, 0.0);
    }

    #[test]
    fn sorts_by_rate_then_level_then_pid() {
        let mut rows = vec![
            row(1, 10.0, 0.0, 5.0),
            row(2, 30.0, -5.0, 1.0),
            row(3, 10.0, 7.0, 5.0),
            row(4, -20.0, 7.0, 9.0),
            row(5, 10.0, 3.0, 0.0),
        ];
        rows[0].reserved = 200 * MIB;
        rows[2].resident = 20 * MIB;

        sort(&mut rows, SortKey::Reserved);
        assert_eq!(pids(&rows), [2, 1, 3, 5, 4]);
        sort(&mut rows, SortKey::Resident);
        assert_eq!(pids(&rows), [3, 4, 5, 1, 2]);
        sort(&mut rows, SortKey::Faults);
        assert_eq!(pids(&rows), [4, 3, 1, 2, 5]);
    }

    #[test]
    fn keys_choose_the_sort_and_quit() {
        let mut view = View::new(SortKey::Reserved);
        assert_eq!(view.key(b'm'), Action::Redraw);
        assert_eq!(view.sort, SortKey::Resident);
        assert_eq!(view.key(b'f'), Action::Redraw);
        assert_eq!(view.sort, SortKey::Faults);
        view.key(b'r');
        assert_eq!(view.sort, SortKey::Reserved);
        view.key(b'M');
        assert_eq!(view.sort, SortKey::Resident);
        assert_eq!(view.key(b'x'), Action::None);
        assert_eq!(view.key(b'q'), Action::Quit);
        assert_eq!(view.key(CTRL_C), Action::Quit);
    }

    #[test]
    fn filter_editing_takes_text_until_enter() {
        let mut view = View::new(SortKey::Reserved);
        assert_eq!(view.key(b'/'), Action::Redraw);
        for &key in b"qrmx" {
            assert_eq!(view.key(key), Action::Redraw);
        }
        assert_eq!(view.filter, "qrmx");
        assert_eq!(view.sort, SortKey::Reserved);
        view.key(DELETE);
        view.key(BACKSPACE);
        assert_eq!(view.filter, "qr");
        assert_eq!(view.key(0xc3), Action::None);
        assert_eq!(view.key(b'\r'), Action::Redraw);
        assert_eq!(view.filter, "qr");
        // Keys are commands again.
        assert_eq!(view.key(b'f'), Action::Redraw);
        assert_eq!(view.sort, SortKey::Faults);
        assert_eq!(view.filter, "qr");
        // Editing again refines the filter kept.
        view.key(b'/');
        view.key(b'z');
        view.key(b'\n');
        assert_eq!(view.filter, "qrz");
    }

    #[test]
    fn esc_clears_the_filter_and_ctrl_c_quits_while_editing() {
        let mut view = View::new(SortKey::Reserved);
        view.key(b'/');
        view.key(b'a');
        assert_eq!(view.key(ESC), Action::Redraw);
        assert_eq!(view.filter, "");
        assert_eq!(view.key(b'q'), Action::Quit);

        view.key(b'/');
        view.key(b'a');
        assert_eq!(view.key(CTRL_C), Action::Quit);

        view.key(b'\r');
        assert_eq!(view.key(ESC), Action::Redraw);
        assert_eq!(view.filter, "");
        assert_eq!(view.key(ESC), Action::None);
    }

    #[test]
    fn the_filter_matches_command_cgroup_or_pid_ignoring_case() {
        let mut rows = vec![
            row(1, 0.0, 0.0, 0.0),
            row(22, 0.0, 0.0, 0.0),
            row(3, 0.0, 0.0, 0.0),
        ];
        rows[0].command = "PostgreSQL".into();
        rows[2].cgroup = "/system.slice/postgres.service".into();
        let mut view = View::new(SortKey::Reserved);
        assert_eq!(pids(view.visible(&rows)), [1, 22, 3]);
        view.filter = "POSTGRES".into();
        assert_eq!(pids(view.visible(&rows)), [1, 3]);
        view.filter = "22".into();
        assert_eq!(pids(view.visible(&rows)), [22]);
        view.filter = "nothing".into();
        assert_eq!(view.visible(&rows).count(), 0);
    }

    #[test]
    fn cuts_are_char_aware() {
        assert_eq!(cut_end("héllo wörld", 6), "héllo…");
        assert_eq!(cut_end("héllo", 5), "héllo");
        assert_eq!(cut_end("héllo", 0), "");
        assert_eq!(cut_start("/a/bé/c.scope", 8), "…c.scope");
        assert_eq!(cut_start("/a/bé/c.scope", 8).chars().count(), 8);
        assert_eq!(cut_start("abc", 0), "");
        assert_eq!(printable("evil\x1b[2J"), "evil?[2J");
    }

    #[test]
    fn formats_signed_rates() {
        assert_eq!(bytes_rate(1.5 * MIB as f64), "+1.5 MiB/s");
        assert_eq!(bytes_rate(-4096.0), "-4.0 KiB/s");
        assert_eq!(bytes_rate(0.2), "0 B/s");
        assert_eq!(bytes_rate(-0.2), "0 B/s");
        assert_eq!(bytes_rate(512.0), "+512 B/s");
    }

    fn sample_rows() -> Vec<Row> {
        let mut grower = row(4242, 12.5 * MIB as f64, 3.0 * MIB as f64, 768.0);
        grower.command = "postgres".into();
        grower.cgroup = "/system.slice/postgresql@16-main.service".into();
        grower.reserved = 3 * (1 << 30) / 2;
        grower.resident = 412 * MIB;
        let mut long = row(1, 4096.0, 0.0, 1.4);
        long.command = "java -Xmx8g -jar /opt/some/very/long/path/application.jar".into();
        long.cgroup = "/user.slice/user-1000.slice/session-2.scope".into();
        long.reserved = 8 << 30;
        long.resident = 900 * MIB;
        let mut gone = row(31337, 0.0, -((210 * MIB) as f64), 0.0);
        gone.command = "cc1plus".into();
        gone.cgroup = "/".into();
        gone.reserved = 0;
        gone.resident = 0;
        gone.exited = true;
        vec![grower, long, gone]
    }

    fn sample_header() -> Header {
        Header {
            elapsed_secs: 12.0,
            processes: 2,
            lost_events: 3,
            refresh_secs: 1.0,
        }
    }

    #[test]
    fn renders_a_screen() {
        let view = View::new(SortKey::Reserved);
        let text = render_screen(&view, &sample_header(), &sample_rows(), 100, 12);
        for line in text.split("\r\n") {
            assert!(line.chars().count() <= 100, "{line:?}");
        }
        assert_snapshot("top-screen.txt", &text);
    }

    #[test]
    fn renders_a_narrow_short_screen_while_editing_the_filter() {
        let mut view = View::new(SortKey::Resident);
        for &key in b"/pOS" {
            view.key(key);
        }
        let text = render_screen(&view, &sample_header(), &sample_rows(), 80, 5);
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines.len(), 4, "{text}");
        for line in &lines {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
        assert_snapshot("top-screen-narrow.txt", &text);
    }

    #[test]
    fn a_screen_says_when_nothing_matches() {
        let mut view = View::new(SortKey::Faults);
        view.filter = "zzz".into();
        let text = render_screen(&view, &sample_header(), &sample_rows(), 120, 24);
        assert!(text.ends_with("(no process matches \"zzz\")"), "{text}");
        assert!(text.contains("[/] filter: zzz  [q]uit"), "{text}");
        assert!(text.contains("0 shown"), "{text}");
        assert_eq!(
            render_screen(&view, &sample_header(), &[], 120, 2)
                .split("\r\n")
                .count(),
            2
        );
    }

    #[test]
    fn renders_batch_blocks() {
        let text = render_batch(&sample_header(), &sample_rows(), SortKey::Reserved, 2);
        assert!(text.ends_with("\n\n"));
        assert!(!text.contains('\x1b'));
        assert_snapshot("top-batch.txt", &text);
    }
}
