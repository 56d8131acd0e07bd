//! `memprof top`: a live view of every traced process, sorted by what grows fastest.
pub mod render;
pub mod terminal;
pub mod view;

use std::{
    io::{self, IsTerminal as _, Write as _},
    time::{Duration, SystemTime},
};

use crossterm::event::Event;

use crate::{
    address_space::SiteId,
    events::monotonic_ns,
    filter::{FilterSpec, ProcessFilter},
    probes::{self, LoadOptions, Probes},
    process::Process,
    report::category::{self, Category, SiteStacks, StackSays},
    session::{Flow, Session, Watch},
    tracker::Tracker,
};
use render::Header;
use terminal::Terminal;
use view::{Action, Figures, MostIn, Rates, Row, View};

pub use view::SortKey;

#[derive(Clone, Debug)]
pub struct TopOptions {
    pub filter: FilterSpec,
    /// What the view is sorted by.
    pub sort: SortKey,
    /// Time between refreshes.
    pub refresh: Duration,
    /// Plain text every refresh instead of the interactive view.
    pub batch: bool,
    /// A line of JSON every refresh instead of the interactive view or plain text.
    pub json: bool,
    /// Processes printed per refresh in batch mode.
    pub limit: usize,
    /// Stop after this many refreshes.
    pub iterations: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Size of the kernel-to-memprof ring buffer (a power of two, at least a page).
    pub ring_buffer_bytes: u32,
}

/// Where refreshes go.
enum Output {
    Screen(Terminal),
    /// Plain-text blocks on stdout.
    Text,
    /// JSON lines on stdout.
    Json,
}

/// The view between refreshes.
struct Top {
    view: View,
    rates: Rates,
    /// The latest refresh's rows, sorted by the view's key.
    rows: Vec<Row>,
    header: Header,
    started_ns: u64,
    refresh: Duration,
    output: Output,
    limit: usize,
    /// Refreshes shown so far, and when the last one was taken (monotonic ns).
    refreshes: u64,
    refreshed_ns: u64,
    iterations: Option<u64>,
    /// `--duration`: when tracing ends by it, the end is the duration's, however long the
    /// probes then take to come off.
    duration: Option<Duration>,
    /// Tracing ended because of this view (its iterations done, stdout closed): nothing is
    /// left to print.
    ended_it: bool,
}

/// Top records no stacks (they would cost every traced process): its categories come from
/// the regions' shapes alone.
struct NoStacks;

impl SiteStacks for NoStacks {
    fn says(&mut self, _: SiteId) -> StackSays {
        StackSays {
            category: None,
            nothing: true,
        }
    }
}

/// The categories holding most of `p`'s reserved and of its resident bytes.
fn most_in(p: &Process) -> MostIn {
    let facts = category::ProcessFacts::of(&p.space);
    let rows = category::breakdown(
        &p.space,
        p.space
            .regions()
            .map(|r| (r, category::categorize(&p.space, r, &facts, &mut NoStacks))),
    );
    let most = |figure: fn(&category::CategoryFigures) -> u64| -> Option<Category> {
        rows.iter()
            .filter(|(_, f)| figure(f) > 0)
            .max_by_key(|(_, f)| figure(f))
            .map(|(&c, _)| c)
    };
    MostIn {
        reserved: most(|f| f.reserved_bytes),
        resident: most(|f| f.resident_bytes),
    }
}

impl Top {
    /// Takes the tracker's figures as the rows.
    fn update(&mut self, tracker: &mut Tracker, lost_events: u64) {
        let now = monotonic_ns();
        let figures = tracker
            .processes
            .values()
            .map(|p| Figures {
                pid: p.pid,
                command: p.command.clone(),
                cgroup: p.cgroup.clone(),
                reserved: p.reserved.end,
                resident: p.resident.end,
                faults: p.events.page_faults,
                most_in: most_in(p),
                exited: p.exited,
            })
            .collect();
        self.rows = self.rates.update(now, figures);
        // Shown once as exited, then forgotten: top may run for days.
        tracker.forget_exited();
        self.header = Header {
            elapsed_secs: (now - self.started_ns) as f64 / 1e9,
            unix_secs: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            lost_events,
        };
        self.refreshes += 1;
        self.refreshed_ns = now;
    }

    /// Shows the rows; stops when nobody reads stdout any more (`memprof top -b | head`).
    fn draw(&mut self) -> anyhow::Result<Flow> {
        view::sort(&mut self.rows, self.view.sort);
        let text = match &mut self.output {
            Output::Screen(terminal) => {
                terminal.draw(|frame| {
                    let area = frame.area();
                    render::screen(
                        &mut self.view,
                        &self.header,
                        &self.rows,
                        area,
                        frame.buffer_mut(),
                    );
                })?;
                return Ok(Flow::Continue);
            }
            Output::Text => {
                render::batch_text(&self.header, &self.rows, self.view.sort, self.limit)
            }
            Output::Json => {
                render::batch_json(&self.header, &self.rows, self.view.sort, self.limit)
            }
        };
        let mut stdout = io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => Ok(Flow::Continue),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Flow::Stop),
            Err(e) => Err(e.into()),
        }
    }

    /// In batch mode, a last refresh when tracing ended (--duration, Ctrl-C) well after
    /// the previous one, so that a log ends with the final figures; none when a refresh
    /// just showed them.
    fn finish(&mut self, tracker: &mut Tracker) -> anyhow::Result<()> {
        let now = monotonic_ns();
        let ended = self
            .duration
            .map(|d| self.started_ns.saturating_add(d.as_nanos() as u64))
            .filter(|&end| end <= now)
            .unwrap_or(now);
        let since = ended.saturating_sub(self.refreshed_ns);
        if self.ended_it
            || matches!(self.output, Output::Screen(_))
            || (self.refreshes > 0 && u128::from(since) < self.refresh.as_nanos() / 2)
        {
            return Ok(());
        }
        self.update(tracker, tracker.lost_events);
        self.draw().map(drop)
    }
}

impl Watch for Top {
    fn refresh_every(&self) -> Duration {
        self.refresh
    }

    fn refresh(&mut self, tracker: &mut Tracker, lost_events: u64) -> anyhow::Result<Flow> {
        // Paused, the rows stay; the tracker keeps counting, so rates resume over the pause.
        if self.view.paused {
            return Ok(Flow::Continue);
        }
        self.update(tracker, lost_events);
        let flow = self.draw()?;
        self.ended_it = flow == Flow::Stop || Some(self.refreshes) == self.iterations;
        Ok(if self.ended_it {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }

    fn reads_terminal(&self) -> bool {
        matches!(self.output, Output::Screen(_))
    }

    fn terminal_input(&mut self) -> anyhow::Result<Flow> {
        let Some(events) = terminal::events()? else {
            // The terminal went away.
            return Ok(Flow::Stop);
        };
        let mut redraw = false;
        for event in events {
            match event {
                Event::Key(key) => match self.view.key(key) {
                    Action::Quit => return Ok(Flow::Stop),
                    Action::Redraw => redraw = true,
                    Action::None => {}
                },
                Event::Resize(..) => redraw = true,
                _ => {}
            }
        }
        if redraw {
            return self.draw();
        }
        Ok(Flow::Continue)
    }
}

pub fn run(args: TopOptions) -> anyhow::Result<()> {
    let filter = ProcessFilter::new(&args.filter)?;
    let layout = probes::check_machine()?;
    let interactive = !args.batch
        && !args.json
        && std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal();
    let (probes, events) = Probes::load(&LoadOptions {
        ring_buffer_bytes: args.ring_buffer_bytes,
        // No stacks: top shows processes, not call sites.
        stack_cache_slots: 1,
        fault_stack_sample: 0,
        filter: filter.kernel(std::process::id()),
        user_stacks: false,
        layout,
        empty_programs: false,
    })?;
    let (mut session, runtime, stop, running) = Session::of_host(probes, &filter)?;
    crate::note!(
        "memprof: tracing {} ({running} running now); {}",
        filter.describe(),
        if interactive {
            "q to quit"
        } else {
            "Ctrl-C to stop"
        }
    );
    let output = if interactive {
        terminal::restore_on_panic();
        Output::Screen(Terminal::enter()?)
    } else if args.json {
        Output::Json
    } else {
        Output::Text
    };
    let mut top = Top {
        view: View::new(args.sort),
        rates: Rates::new(),
        rows: Vec::new(),
        header: Header {
            elapsed_secs: 0.0,
            unix_secs: 0.0,
            lost_events: 0,
        },
        started_ns: session.tracker.started_ns,
        refresh: args.refresh,
        output,
        limit: args.limit,
        refreshes: 0,
        refreshed_ns: session.tracker.started_ns,
        iterations: args.iterations,
        duration: args.duration,
        ended_it: false,
    };
    if interactive {
        // At once, rather than a blank screen until the first refresh (rates need a second).
        top.update(&mut session.tracker, 0);
        top.draw()?;
    }
    let result = runtime
        .block_on(session.run(events, stop, args.duration, Some(&mut top)))
        .and_then(|()| top.finish(&mut session.tracker));
    // Leave the alternate screen before anything more is printed.
    drop(top);
    result?;
    crate::note!("memprof: lost events: {}", session.tracker.lost_events);
    Ok(())
}
