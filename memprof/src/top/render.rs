//! How `memprof top` looks: the screen and its help, drawn with ratatui into a buffer (so
//! that tests snapshot it as text), and batch mode's plain-text blocks and JSON lines.
use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row as TableRow, Table, Widget as _, Wrap},
};
use serde::Serialize;

use super::view::{Row, SortKey, View};
use crate::{report::category::Category, units::bytes};

/// The figures about the whole session shown above the rows.
#[derive(Clone, Debug)]
pub struct Header {
    pub elapsed_secs: f64,
    /// Wall-clock time of the refresh, in seconds since the Unix epoch: logs need it.
    pub unix_secs: f64,
    /// Events the kernel could not deliver: shown always, since any figure may be off.
    pub lost_events: u64,
}

/// Right-aligned figure columns after COMMAND and PID: title and width. The widths fit the
/// widest values, "1023.9 KiB" and "+1023.9 KiB" (the title says it is per second), and
/// the sorted column's marked title ("▼FAULTS/s").
const NUMBER_COLUMNS: [(&str, u16); 5] = [
    ("RESERVED", 10),
    ("RESERVED/s", 11),
    ("RESIDENT", 10),
    ("RESIDENT/s", 11),
    ("FAULTS/s", 9),
];
const PID_WIDTH: u16 = 7;
/// COMMAND's width at least, even when figures on the right then fall off a narrow screen:
/// the name tells the process, and at 80 columns, where every figure shows, it holds
/// "memprof-workload" whole.
const COMMAND_MIN_WIDTH: u16 = 16;
/// MOST IN: the longest category, "jvm_code_cache".
const MOST_IN_WIDTH: u16 = 14;
/// CGROUP, the last column, is left out with less room than this.
const CGROUP_MIN_WIDTH: u16 = 12;
const BATCH_COMMAND_WIDTH: u16 = 32;
const EXITED: &str = " (exited)";
/// Lines above the table's rows: the title, the keys, the column titles.
const SCREEN_HEADER_LINES: u16 = 3;

/// Widths of the columns shown: COMMAND, then the leading `numbers` of [`NUMBER_COLUMNS`],
/// then MOST IN when there is room, then CGROUP when it has a width.
struct Widths {
    command: u16,
    numbers: usize,
    most_in: bool,
    cgroup: Option<u16>,
}

impl Widths {
    /// As many figures as fit beside COMMAND (all from 80 columns on), then CGROUP with a
    /// share of what is left; COMMAND gets the rest.
    fn for_screen(width: u16) -> Self {
        let mut used = COMMAND_MIN_WIDTH + 1 + PID_WIDTH;
        let mut numbers = 0;
        for (_, w) in NUMBER_COLUMNS {
            if used + 1 + w > width {
                break;
            }
            used += 1 + w;
            numbers += 1;
        }
        let most_in = numbers == NUMBER_COLUMNS.len() && width >= used + 1 + MOST_IN_WIDTH;
        if most_in {
            used += 1 + MOST_IN_WIDTH;
        }
        let spare = width.saturating_sub(used);
        // Commands get the larger share, as they tell processes apart.
        let cgroup = (spare * 2 / 5)
            .checked_sub(1)
            .filter(|&w| w >= CGROUP_MIN_WIDTH);
        Widths {
            command: COMMAND_MIN_WIDTH + spare - cgroup.map_or(0, |w| w + 1),
            numbers,
            most_in,
            cgroup,
        }
    }

    /// Every figure, COMMAND cut at a fixed width so that blocks line up, and CGROUP whole
    /// (the last column, as wide as the longest).
    fn for_batch(rows: &[Row]) -> Self {
        let cgroup = rows.iter().map(|r| r.cgroup.chars().count()).max();
        Widths {
            command: BATCH_COMMAND_WIDTH,
            numbers: NUMBER_COLUMNS.len(),
            most_in: true,
            cgroup: Some(u16::try_from(cgroup.unwrap_or(0).max(6)).unwrap_or(u16::MAX)),
        }
    }

    fn columns(&self) -> Vec<u16> {
        let mut widths = vec![self.command, PID_WIDTH];
        widths.extend(NUMBER_COLUMNS[..self.numbers].iter().map(|&(_, w)| w));
        widths.extend(self.most_in.then_some(MOST_IN_WIDTH));
        widths.extend(self.cgroup);
        widths
    }

    /// The table's width: its columns and a space between each two.
    fn total(&self) -> u16 {
        let columns = self.columns();
        let spaces = u16::try_from(columns.len() - 1).unwrap_or(u16::MAX);
        columns.into_iter().fold(spaces, u16::saturating_add)
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

/// The program's name (the base name of its path) and its arguments: a long path would
/// push the name out of a narrow column.
fn name_and_arguments(command: &str) -> (&str, &str) {
    let (program, arguments) = command.split_once(' ').unwrap_or((command, ""));
    (program.rsplit('/').next().unwrap_or(program), arguments)
}

/// The command cut to `width`, its name first, then its arguments; the exited mark kept
/// visible.
fn command_cell(row: &Row, width: usize) -> String {
    let (name, arguments) = name_and_arguments(&row.command);
    let mark = if row.exited { EXITED } else { "" };
    let room = width.saturating_sub(mark.len()).max(1);
    // The name alone when its arguments would show a char or two: cut, a name no longer
    // tells the process.
    let text = if arguments.is_empty() || name.chars().count() + 2 >= room {
        printable(name)
    } else {
        printable(&format!("{name} {arguments}"))
    };
    cut_end(&(cut_end(&text, room) + mark), width)
}

/// A signed rate in binary units: "+1.5 MiB", "-4.0 KiB", "0 B" (per second).
fn bytes_rate(rate: f64) -> String {
    let magnitude = rate.abs().round() as u64;
    if magnitude == 0 {
        return "0 B".to_string();
    }
    let sign = if rate < 0.0 { '-' } else { '+' };
    format!("{sign}{}", bytes(magnitude))
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).right_aligned())
}

/// The column titles, the sorted one marked when `sorted` is given.
fn column_titles(widths: &Widths, sorted: Option<SortKey>) -> TableRow<'static> {
    let sorted = sorted.map(|key| match key {
        SortKey::Reserved => "RESERVED/s",
        SortKey::Resident => "RESIDENT/s",
        SortKey::Faults => "FAULTS/s",
    });
    let mut cells = vec![Cell::from("COMMAND"), right("PID".into())];
    cells.extend(NUMBER_COLUMNS[..widths.numbers].iter().map(|&(title, _)| {
        right(if sorted == Some(title) {
            format!("▼{title}")
        } else {
            title.to_string()
        })
    }));
    if widths.most_in {
        cells.push(Cell::from("MOST IN"));
    }
    if widths.cgroup.is_some() {
        cells.push(Cell::from("CGROUP"));
    }
    TableRow::new(cells)
}

/// A row; MOST IN names the category of the figure `key` sorts by.
fn table_row(widths: &Widths, key: SortKey, row: &Row) -> TableRow<'static> {
    let numbers = [
        bytes(row.reserved),
        bytes_rate(row.reserved_rate),
        bytes(row.resident),
        bytes_rate(row.resident_rate),
        format!("{:.0}", row.faults_rate),
    ];
    let mut cells = vec![
        Cell::from(command_cell(row, usize::from(widths.command))),
        right(row.pid.to_string()),
    ];
    cells.extend(numbers.into_iter().take(widths.numbers).map(right));
    if widths.most_in {
        cells.push(Cell::from(row.most_in.by(key).map_or("", Category::id)));
    }
    if let Some(w) = widths.cgroup {
        cells.push(Cell::from(cut_start(
            &printable(&row.cgroup),
            usize::from(w),
        )));
    }
    let style = if row.exited {
        Style::new().add_modifier(Modifier::DIM)
    } else {
        Style::new()
    };
    TableRow::new(cells).style(style)
}

/// The rows under their titles, the sorted column's marked when `marked`.
fn table<'a>(widths: &Widths, key: SortKey, marked: bool, rows: &[&Row]) -> Table<'a> {
    let sorted = marked.then_some(key);
    Table::new(
        rows.iter().map(|row| table_row(widths, key, row)),
        widths.columns().into_iter().map(Constraint::Length),
    )
    .header(column_titles(widths, sorted).style(Style::new().add_modifier(Modifier::REVERSED)))
}

/// "3 processes (1 exited, 2 shown)": every row of this refresh counts, exited ones too,
/// so that the count matches the rows.
fn counts(rows: &[Row], shown: usize) -> String {
    let all = rows.len();
    let exited = rows.iter().filter(|r| r.exited).count();
    let mut notes = Vec::new();
    if exited > 0 {
        notes.push(format!("{exited} exited"));
    }
    if shown < all {
        notes.push(format!("{shown} shown"));
    }
    let mut text = format!("{all} process{}", if all == 1 { "" } else { "es" });
    if !notes.is_empty() {
        text += &format!(" ({})", notes.join(", "));
    }
    text
}

/// The line under the title: how to end filter editing while editing, else whether the
/// view is paused, what it is filtered by, which rows are shown when not all fit, and the
/// keys (last, as the part a narrow screen may cut).
fn keys_line(view: &View, shown: usize, visible: usize) -> String {
    if view.editing {
        return format!("filter: {}_  (Enter: keep, Esc: clear)", view.filter);
    }
    let mut line = String::new();
    if view.paused {
        line += "PAUSED (space resumes)  ";
    }
    if !view.filter.is_empty() {
        line += &format!("filter: {}  ", view.filter);
    }
    if shown < visible {
        line += &format!(
            "rows {}-{} of {visible}  ",
            view.scroll + 1,
            view.scroll + shown
        );
    }
    line + "? help  / filter  r m f sort  space pause  q quit"
}

/// Draws the screen over `area` of `buf`: title, keys, column titles and as many of the
/// rows (sorted by the caller, filtered here) as fit from the view's scroll position, or
/// the help. Keeps the scroll position within the rows and records the page size.
pub fn screen(view: &mut View, header: &Header, rows: &[Row], area: Rect, buf: &mut Buffer) {
    if view.help {
        help(area, buf);
        return;
    }
    let visible: Vec<&Row> = view.visible(rows).collect();
    let room = usize::from(area.height.saturating_sub(SCREEN_HEADER_LINES));
    view.page = room.max(1);
    view.scroll = view.scroll.min(visible.len().saturating_sub(room));
    let shown = &visible[view.scroll..visible.len().min(view.scroll + room)];

    let title = format!(
        "memprof top  {:.1} s  {}  lost events: {}",
        header.elapsed_secs,
        counts(rows, visible.len()),
        header.lost_events,
    );
    let mut lines = vec![
        Line::from(title),
        Line::from(keys_line(view, shown.len(), visible.len())),
    ];
    let widths = Widths::for_screen(area.width);
    let rows_area = Rect {
        y: area.y + 2,
        height: area.height.saturating_sub(2),
        ..area
    };
    table(&widths, view.sort, true, shown).render(rows_area, buf);
    if visible.is_empty() {
        lines.push(Line::default());
        lines.push(Line::from(if view.filter.is_empty() {
            "  (no traced process)".to_string()
        } else {
            format!("  (no process matches \"{}\")", view.filter)
        }));
    }
    // Over the table's area only where it left lines empty.
    for (y, line) in (area.y..area.bottom()).zip(&lines) {
        if y != area.y + 2 {
            buf.set_line(area.x, y, line, area.width);
        }
    }
}

const HELP: &str = "\
Keys
  r  m  f        sort by reserved growth, resident growth or faults per second
  /              filter by command, cgroup or pid (Enter keeps, Esc clears)
  ↑ ↓ PgUp PgDn  scroll (also j k, Home, End)
  space  p       pause: the rows stay as they are until resumed
  ?  h           this help
  q  Ctrl-C      quit

Columns
  COMMAND        the program's name, then its arguments
  RESERVED       address space (VSZ); RESERVED/s, its growth per second
  RESIDENT       resident set (RSS); RESIDENT/s, its growth per second
  FAULTS/s       page faults per second
  MOST IN        the category holding most of it: reserved, or resident when
                 sorted by resident or faults (go_heap, malloc_arena, ...)
  CGROUP         the cgroup v2 path, cut at the start

Rows marked (exited): processes gone since the previous refresh.
Lost events: what the kernel could not deliver; figures may be short by it.

Any key goes back.";

fn help(area: Rect, buf: &mut Buffer) {
    Paragraph::new(HELP)
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(" memprof top: help "))
        .render(area, buf);
}

/// The buffer's lines as text, trailing blanks cut.
pub fn buffer_text(buf: &Buffer) -> String {
    let mut text = String::new();
    for cells in buf.content.chunks(usize::from(buf.area.width.max(1))) {
        let mut line = String::new();
        // Cells under a wide character's right half hold a blank that is not on screen.
        let mut hidden = 0;
        for cell in cells {
            if hidden > 0 {
                hidden -= 1;
                continue;
            }
            line += cell.symbol();
            hidden = Span::raw(cell.symbol()).width().saturating_sub(1);
        }
        text += line.trim_end();
        text.push('\n');
    }
    text
}

/// One plain-text block for logs: a title line, the column titles and the first `limit`
/// rows (in the caller's order, unfiltered), then an empty line.
pub fn batch_text(header: &Header, rows: &[Row], key: SortKey, limit: usize) -> String {
    let shown: Vec<&Row> = rows.iter().take(limit).collect();
    let widths = Widths::for_batch(rows);
    let height = u16::try_from(shown.len() + 1).unwrap_or(u16::MAX);
    let mut buf = Buffer::empty(Rect::new(0, 0, widths.total(), height));
    // Unmarked, so that scripts find the same titles whatever the sort: the first line
    // says it.
    table(&widths, key, false, &shown).render(buf.area, &mut buf);
    format!(
        "memprof top  {:.1} s  {}  lost events: {}  sorted by {}\n{}\n",
        header.elapsed_secs,
        counts(rows, shown.len()),
        header.lost_events,
        key.describe(),
        buffer_text(&buf),
    )
}

/// One row of [`batch_json`].
#[derive(Serialize)]
struct JsonRow<'a> {
    pid: u32,
    /// The program's name, as COMMAND starts.
    name: &'a str,
    command: &'a str,
    cgroup: &'a str,
    reserved_bytes: u64,
    reserved_bytes_per_sec: f64,
    resident_bytes: u64,
    resident_bytes_per_sec: f64,
    faults_per_sec: f64,
    /// The categories holding most of its reserved and of its resident bytes.
    reserved_most_in: Option<Category>,
    resident_most_in: Option<Category>,
    exited: bool,
}

/// One refresh of [`batch_json`].
#[derive(Serialize)]
struct JsonRefresh<'a> {
    elapsed_secs: f64,
    unix_secs: f64,
    lost_events: u64,
    sort: SortKey,
    /// Every process of the refresh, exited ones too; `rows` may hold fewer.
    processes: usize,
    exited: usize,
    rows: Vec<JsonRow<'a>>,
}

/// One refresh as one line of JSON (ended by a newline): the header's figures and the first
/// `limit` rows, in the caller's order.
pub fn batch_json(header: &Header, rows: &[Row], key: SortKey, limit: usize) -> String {
    let refresh = JsonRefresh {
        elapsed_secs: header.elapsed_secs,
        unix_secs: header.unix_secs,
        lost_events: header.lost_events,
        sort: key,
        processes: rows.len(),
        exited: rows.iter().filter(|r| r.exited).count(),
        rows: rows
            .iter()
            .take(limit)
            .map(|row| JsonRow {
                pid: row.pid,
                name: name_and_arguments(&row.command).0,
                command: &row.command,
                cgroup: &row.cgroup,
                reserved_bytes: row.reserved,
                reserved_bytes_per_sec: row.reserved_rate,
                resident_bytes: row.resident,
                resident_bytes_per_sec: row.resident_rate,
                faults_per_sec: row.faults_rate,
                reserved_most_in: row.most_in.reserved,
                resident_most_in: row.most_in.resident,
                exited: row.exited,
            })
            .collect(),
    };
    // Only strings, integers and finite rates: serializing cannot fail.
    serde_json::to_string(&refresh).expect("top's JSON") + "\n"
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent};

    use super::*;
    use crate::testing::assert_snapshot;
    use crate::top::view::{
        MostIn,
        tests::{MIB, row},
    };

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
    fn commands_start_with_the_programs_name_kept_whole() {
        let mut go = row(1, 0.0, 0.0, 0.0);
        go.command = "/usr/lib/go-1.19/bin/go build -o x .".into();
        assert_eq!(command_cell(&go, 40), "go build -o x .");
        let mut workload = row(2, 0.0, 0.0, 0.0);
        workload.command = "/work/memprof-workload --hold-ms 1".into();
        assert_eq!(command_cell(&workload, 16), "memprof-workload");
        assert_eq!(command_cell(&workload, 18), "memprof-workload");
        assert_eq!(command_cell(&workload, 19), "memprof-workload -…");
        assert_eq!(command_cell(&workload, 10), "memprof-w…");
        workload.exited = true;
        assert_eq!(
            command_cell(&workload, 40),
            "memprof-workload --hold-ms 1 (exited)"
        );
        assert_eq!(command_cell(&workload, 16), "mempro… (exited)");
        assert_eq!(command_cell(&workload, 4).chars().count(), 4);
        assert_eq!(name_and_arguments("/bin/sh -c a/b").0, "sh");
        assert_eq!(name_and_arguments("").0, "");
    }

    #[test]
    fn formats_signed_rates() {
        assert_eq!(bytes_rate(1.5 * MIB as f64), "+1.5 MiB");
        assert_eq!(bytes_rate(-4096.0), "-4.0 KiB");
        assert_eq!(bytes_rate(0.2), "0 B");
        assert_eq!(bytes_rate(-0.2), "0 B");
        assert_eq!(bytes_rate(512.0), "+512 B");
    }

    #[test]
    fn narrow_screens_keep_the_command_and_drop_figures_from_the_right() {
        for width in [40, 60, 79, 80, 100, 200] {
            let widths = Widths::for_screen(width);
            assert!(widths.command >= COMMAND_MIN_WIDTH, "{width}");
            assert!(widths.total() <= width.max(COMMAND_MIN_WIDTH + 1 + PID_WIDTH));
        }
        assert_eq!(Widths::for_screen(80).numbers, NUMBER_COLUMNS.len());
        assert_eq!(Widths::for_screen(80).command, COMMAND_MIN_WIDTH);
        assert!(Widths::for_screen(60).numbers < NUMBER_COLUMNS.len());
        assert!(Widths::for_screen(80).cgroup.is_none());
        assert!(!Widths::for_screen(80).most_in);
        // MOST IN before CGROUP, which needs more room.
        assert!(Widths::for_screen(100).most_in);
        assert!(Widths::for_screen(120).cgroup.is_none());
        assert!(Widths::for_screen(140).cgroup.is_some());
        assert_eq!(Widths::for_screen(140).total(), 140);
    }

    fn sample_rows() -> Vec<Row> {
        let mut grower = row(4242, 12.5 * MIB as f64, 3.0 * MIB as f64, 768.0);
        grower.command = "/usr/lib/postgresql/16/bin/postgres -D /var/lib/postgresql".into();
        grower.cgroup = "/system.slice/postgresql@16-main.service".into();
        grower.reserved = 3 * (1 << 30) / 2;
        grower.resident = 412 * MIB;
        grower.most_in = MostIn {
            reserved: Some(Category::SharedMemory),
            resident: Some(Category::SharedMemory),
        };
        let mut long = row(1, 4096.0, 0.0, 1.4);
        long.command = "java -Xmx8g -jar /opt/some/very/long/path/application.jar".into();
        long.cgroup = "/user.slice/user-1000.slice/session-2.scope".into();
        long.reserved = 8 << 30;
        long.resident = 900 * MIB;
        long.most_in = MostIn {
            reserved: Some(Category::JvmHeap),
            resident: Some(Category::JvmHeap),
        };
        let mut gone = row(31337, 0.0, -((210 * MIB) as f64), 0.0);
        gone.command = "cc1plus".into();
        gone.cgroup = "/".into();
        gone.reserved = 0;
        gone.resident = 0;
        gone.most_in = MostIn::default();
        gone.exited = true;
        vec![grower, long, gone]
    }

    fn sample_header() -> Header {
        Header {
            elapsed_secs: 12.0,
            unix_secs: 1_795_000_000.5,
            lost_events: 3,
        }
    }

    fn draw(view: &mut View, rows: &[Row], width: u16, height: u16) -> String {
        let mut buf = Buffer::empty(Rect::new(0, 0, width, height));
        screen(view, &sample_header(), rows, buf.area, &mut buf);
        buffer_text(&buf)
    }

    #[test]
    fn renders_a_wide_screen() {
        let mut view = View::new(SortKey::Reserved);
        let text = draw(&mut view, &sample_rows(), 140, 8);
        assert!(text.contains("3 processes (1 exited)"), "{text}");
        assert!(text.contains("cc1plus (exited)"), "{text}");
        assert!(text.contains("CGROUP"), "{text}");
        assert!(text.contains("MOST IN"), "{text}");
        assert_snapshot("top-screen.txt", &text);
    }

    #[test]
    fn renders_80_columns_with_names_whole() {
        let mut view = View::new(SortKey::Resident);
        let text = draw(&mut view, &sample_rows(), 80, 24);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
        for name in [
            "postgres -D",
            "java -Xmx8g",
            "cc1plus (exited)",
            "▼RESIDENT/s",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        assert_snapshot("top-screen-80.txt", &text);
    }

    #[test]
    fn renders_the_filter_being_edited() {
        let mut view = View::new(SortKey::Resident);
        for c in "/pOS".chars() {
            view.key(KeyEvent::from(KeyCode::Char(c)));
        }
        let text = draw(&mut view, &sample_rows(), 80, 5);
        assert!(text.contains("filter: pOS_"), "{text}");
        assert!(text.contains("3 processes (1 exited, 1 shown)"), "{text}");
        assert!(text.contains("postgres"), "{text}");
        assert!(!text.contains("java"), "{text}");
    }

    #[test]
    fn scrolls_within_the_rows_and_says_which_are_shown() {
        let rows: Vec<Row> = (1..=30).map(|pid| row(pid, 0.0, 0.0, 0.0)).collect();
        let mut view = View::new(SortKey::Reserved);
        // 3 lines of header leave 7 rows.
        let text = draw(&mut view, &rows, 100, 10);
        assert_eq!(view.page, 7);
        assert!(text.contains("rows 1-7 of 30"), "{text}");
        view.key(KeyEvent::from(KeyCode::PageDown));
        view.key(KeyEvent::from(KeyCode::Down));
        let text = draw(&mut view, &rows, 100, 10);
        assert!(text.contains("rows 9-15 of 30"), "{text}");
        assert!(text.lines().nth(3).unwrap().starts_with("cmd9 "), "{text}");
        view.key(KeyEvent::from(KeyCode::End));
        let text = draw(&mut view, &rows, 100, 10);
        assert!(text.contains("rows 24-30 of 30"), "{text}");
        assert!(
            text.trim_end()
                .lines()
                .last()
                .unwrap()
                .starts_with("cmd30 ")
        );
        // Up from the end moves at once: the position was kept within the rows.
        view.key(KeyEvent::from(KeyCode::Up));
        assert!(draw(&mut view, &rows, 100, 10).contains("rows 23-29 of 30"));
    }

    #[test]
    fn help_fits_80_by_24() {
        let mut view = View::new(SortKey::Reserved);
        view.key(KeyEvent::from(KeyCode::Char('?')));
        let text = draw(&mut view, &sample_rows(), 80, 24);
        assert!(!text.contains("postgres"), "{text}");
        for line in HELP.lines() {
            assert!(text.contains(line.trim_end()), "{line:?} cut:\n{text}");
        }
        assert_snapshot("top-help.txt", &text);
    }

    #[test]
    fn a_screen_says_when_nothing_matches_or_nothing_is_traced() {
        let mut view = View::new(SortKey::Faults);
        view.filter = "zzz".into();
        let text = draw(&mut view, &sample_rows(), 120, 24);
        assert!(text.contains("(no process matches \"zzz\")"), "{text}");
        assert!(text.contains("filter: zzz"), "{text}");
        assert!(text.contains("0 shown"), "{text}");
        let mut view = View::new(SortKey::Faults);
        assert!(draw(&mut view, &[], 120, 24).contains("(no traced process)"));
        assert_eq!(draw(&mut view, &[], 120, 2).lines().count(), 2);
    }

    #[test]
    fn tiny_screens_draw_what_fits() {
        for (width, height) in [(1, 1), (10, 1), (20, 3), (80, 2), (30, 4)] {
            for help in [false, true] {
                let mut view = View::new(SortKey::Reserved);
                view.help = help;
                let text = draw(&mut view, &sample_rows(), width, height);
                assert_eq!(text.lines().count(), usize::from(height));
            }
        }
    }

    #[test]
    fn renders_batch_blocks() {
        let text = batch_text(&sample_header(), &sample_rows(), SortKey::Reserved, 2);
        assert!(text.ends_with("\n\n"));
        assert!(!text.contains('\x1b'));
        // The cgroup, last, is never cut.
        assert!(text.contains("/system.slice/postgresql@16-main.service\n"));
        assert!(text.contains("3 processes (1 exited, 2 shown)"), "{text}");
        assert_snapshot("top-batch.txt", &text);
    }

    #[test]
    fn batch_json_is_one_line_per_refresh() {
        let rows = sample_rows();
        let line = batch_json(&sample_header(), &rows, SortKey::Faults, 2);
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["sort"], "faults");
        assert_eq!(json["processes"], 3);
        assert_eq!(json["exited"], 1);
        assert_eq!(json["lost_events"], 3);
        assert_eq!(json["unix_secs"], 1_795_000_000.5);
        let first = &json["rows"][0];
        assert_eq!(json["rows"].as_array().unwrap().len(), 2);
        assert_eq!(first["pid"], rows[0].pid);
        assert_eq!(first["name"], "postgres");
        assert_eq!(first["command"], rows[0].command);
        assert_eq!(first["reserved_bytes"], rows[0].reserved);
        assert_eq!(first["resident_bytes_per_sec"], rows[0].resident_rate);
        assert_eq!(first["exited"], false);
    }
}
