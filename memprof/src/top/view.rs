//! What `memprof top` knows between refreshes: rows with their rates, their order, and the
//! user's choices made with keys; pure, so that it is tested without a terminal.
use std::collections::HashMap;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde::Serialize;

use crate::report::category::Category;

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
    pub most_in: MostIn,
    pub exited: bool,
}

/// The categories holding most of a process's reserved and of its resident bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MostIn {
    pub reserved: Option<Category>,
    pub resident: Option<Category>,
}

impl MostIn {
    /// The one of the figure a view sorted by `key` is about: resident for faults, which
    /// make pages resident.
    pub fn by(self, key: SortKey) -> Option<Category> {
        match key {
            SortKey::Reserved => self.reserved,
            SortKey::Resident | SortKey::Faults => self.resident,
        }
    }
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
    pub most_in: MostIn,
    pub exited: bool,
}

/// What the rows are sorted by, fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    /// By reserved (address space) growth
    Reserved,
    /// By resident (RSS) growth
    Resident,
    /// By page fault rate
    Faults,
}

impl SortKey {
    pub(super) fn describe(self) -> &'static str {
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
                    most_in: f.most_in,
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

/// The user's choices: sort key, filter, help, pause and scrolling, changed by keys.
#[derive(Clone, Debug)]
pub struct View {
    pub sort: SortKey,
    /// Case-insensitive substring of the command, cgroup or pid; empty shows every row.
    pub filter: String,
    /// Keys go to the filter text rather than being commands.
    pub editing: bool,
    /// The help screen is shown instead of the rows.
    pub help: bool,
    /// Refreshes leave the rows as they are, so they can be read.
    pub paused: bool,
    /// Index of the first visible row shown; kept within the rows when drawn.
    pub scroll: usize,
    /// Rows the last frame had room for: how far PgUp and PgDn move.
    pub page: usize,
}

impl View {
    /// Sorted by `sort`, with no filter.
    pub fn new(sort: SortKey) -> Self {
        Self {
            sort,
            filter: String::new(),
            editing: false,
            help: false,
            paused: false,
            scroll: 0,
            page: 1,
        }
    }

    /// Handles one key read from the terminal.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let control = key.modifiers.contains(KeyModifiers::CONTROL);
        if control && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.help {
            // Any key goes back, as in top(1).
            self.help = false;
            return Action::Redraw;
        }
        if self.editing {
            match key.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !control => self.filter.push(c),
                _ => return Action::None,
            }
            // Whatever the filter leaves starts at the top.
            self.scroll = 0;
            return Action::Redraw;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char(sort @ ('r' | 'm' | 'M' | 'f')) => {
                self.sort = match sort {
                    'r' => SortKey::Reserved,
                    'f' => SortKey::Faults,
                    _ => SortKey::Resident,
                };
                self.scroll = 0;
            }
            // The current filter is kept, so it can be refined rather than typed again.
            KeyCode::Char('/') => self.editing = true,
            KeyCode::Char('?' | 'h') => self.help = true,
            KeyCode::Char(' ' | 'p') => self.paused = !self.paused,
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.scroll = 0;
            }
            KeyCode::Down | KeyCode::Char('j') => self.scroll = self.scroll.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_add(self.page),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(self.page),
            KeyCode::Home => self.scroll = 0,
            // Brought back to the last page when drawn.
            KeyCode::End => self.scroll = usize::MAX,
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    pub(in crate::top) const MIB: u64 = 1 << 20;

    fn figures(pid: u32, reserved: u64, resident: u64, faults: u64) -> Figures {
        Figures {
            pid,
            command: format!("cmd{pid}"),
            cgroup: "/system.slice/app.service".into(),
            reserved,
            resident,
            faults,
            most_in: MostIn::default(),
            exited: false,
        }
    }

    pub(in crate::top) fn row(
        pid: u32,
        reserved_rate: f64,
        resident_rate: f64,
        faults_rate: f64,
    ) -> Row {
        Row {
            pid,
            command: format!("cmd{pid}"),
            cgroup: format!("/user.slice/session-{pid}.scope"),
            reserved: 100 * MIB,
            resident: 10 * MIB,
            reserved_rate,
            resident_rate,
            faults_rate,
            most_in: MostIn {
                reserved: Some(Category::GoRuntime),
                resident: Some(Category::GoHeap),
            },
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

    fn press(view: &mut View, keys: &str) -> Action {
        keys.chars()
            .map(|c| view.key(KeyEvent::from(KeyCode::Char(c))))
            .last()
            .unwrap()
    }

    fn code(view: &mut View, code: KeyCode) -> Action {
        view.key(KeyEvent::from(code))
    }

    const CTRL_C: KeyEvent = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);

    #[test]
    fn keys_choose_the_sort_and_quit() {
        let mut view = View::new(SortKey::Reserved);
        assert_eq!(press(&mut view, "m"), Action::Redraw);
        assert_eq!(view.sort, SortKey::Resident);
        assert_eq!(press(&mut view, "f"), Action::Redraw);
        assert_eq!(view.sort, SortKey::Faults);
        press(&mut view, "r");
        assert_eq!(view.sort, SortKey::Reserved);
        press(&mut view, "M");
        assert_eq!(view.sort, SortKey::Resident);
        assert_eq!(press(&mut view, "x"), Action::None);
        assert_eq!(code(&mut view, KeyCode::F(5)), Action::None);
        assert_eq!(press(&mut view, "q"), Action::Quit);
        assert_eq!(view.key(CTRL_C), Action::Quit);
    }

    #[test]
    fn filter_editing_takes_text_until_enter() {
        let mut view = View::new(SortKey::Reserved);
        assert_eq!(press(&mut view, "/"), Action::Redraw);
        assert_eq!(press(&mut view, "qrmx ?hé"), Action::Redraw);
        assert_eq!(view.filter, "qrmx ?hé");
        assert_eq!(view.sort, SortKey::Reserved);
        assert!(!view.help && !view.paused);
        for _ in 0..6 {
            code(&mut view, KeyCode::Backspace);
        }
        assert_eq!(view.filter, "qr");
        // An arrow is one key, not an Esc that clears the filter and then text.
        assert_eq!(code(&mut view, KeyCode::Left), Action::None);
        assert_eq!(view.filter, "qr");
        assert_eq!(code(&mut view, KeyCode::Enter), Action::Redraw);
        assert_eq!(view.filter, "qr");
        // Keys are commands again.
        assert_eq!(press(&mut view, "f"), Action::Redraw);
        assert_eq!(view.sort, SortKey::Faults);
        assert_eq!(view.filter, "qr");
        // Editing again refines the filter kept.
        press(&mut view, "/z");
        code(&mut view, KeyCode::Enter);
        assert_eq!(view.filter, "qrz");
    }

    #[test]
    fn esc_clears_the_filter_and_ctrl_c_quits_while_editing() {
        let mut view = View::new(SortKey::Reserved);
        press(&mut view, "/a");
        assert_eq!(code(&mut view, KeyCode::Esc), Action::Redraw);
        assert_eq!(view.filter, "");
        assert_eq!(press(&mut view, "q"), Action::Quit);

        press(&mut view, "/a");
        assert_eq!(view.key(CTRL_C), Action::Quit);

        code(&mut view, KeyCode::Enter);
        assert_eq!(code(&mut view, KeyCode::Esc), Action::Redraw);
        assert_eq!(view.filter, "");
        assert_eq!(code(&mut view, KeyCode::Esc), Action::None);
    }

    #[test]
    fn help_shows_until_any_key_and_space_pauses() {
        let mut view = View::new(SortKey::Reserved);
        for open in ["?", "h"] {
            assert_eq!(press(&mut view, open), Action::Redraw);
            assert!(view.help);
            // The key that closes the help does nothing else.
            assert_eq!(press(&mut view, "f"), Action::Redraw);
            assert!(!view.help);
            assert_eq!(view.sort, SortKey::Reserved);
        }
        press(&mut view, "?");
        assert_eq!(view.key(CTRL_C), Action::Quit);

        let mut view = View::new(SortKey::Reserved);
        press(&mut view, " ");
        assert!(view.paused);
        press(&mut view, "p");
        assert!(!view.paused);
    }

    #[test]
    fn arrows_and_pages_scroll() {
        let mut view = View::new(SortKey::Reserved);
        view.page = 10;
        code(&mut view, KeyCode::Up);
        assert_eq!(view.scroll, 0);
        code(&mut view, KeyCode::Down);
        press(&mut view, "j");
        assert_eq!(view.scroll, 2);
        code(&mut view, KeyCode::PageDown);
        assert_eq!(view.scroll, 12);
        press(&mut view, "k");
        code(&mut view, KeyCode::PageUp);
        assert_eq!(view.scroll, 1);
        code(&mut view, KeyCode::End);
        assert_eq!(view.scroll, usize::MAX);
        code(&mut view, KeyCode::Home);
        assert_eq!(view.scroll, 0);
        // A new sort or filter starts at the top.
        view.scroll = 5;
        press(&mut view, "f");
        assert_eq!(view.scroll, 0);
        view.scroll = 5;
        press(&mut view, "/x");
        assert_eq!(view.scroll, 0);
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
}
