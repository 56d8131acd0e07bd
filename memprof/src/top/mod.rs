//! `memprof top`: a live view of every traced process, sorted by what grows fastest.
pub mod terminal;
pub mod view;

use std::{
    io::{IsTerminal as _, Write as _},
    time::Duration,
};

use crate::{
    events::monotonic_ns,
    filter::{FilterSpec, ProcessFilter},
    probes::{self, LoadOptions, Probes},
    session::{Flow, Session, Watch},
    tracker::Tracker,
};
use terminal::Terminal;
use view::{Action, Figures, Header, Rates, Row, View};

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
    /// Processes printed per refresh in batch mode.
    pub limit: usize,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Size of the kernel-to-memprof ring buffer (a power of two, at least a page).
    pub ring_buffer_bytes: u32,
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
    /// None in batch mode.
    terminal: Option<Terminal>,
    limit: usize,
}

impl Top {
    fn draw(&mut self) -> anyhow::Result<()> {
        view::sort(&mut self.rows, self.view.sort);
        match &mut self.terminal {
            Some(terminal) => {
                let (width, height) = terminal::size();
                let frame =
                    view::render_screen(&self.view, &self.header, &self.rows, width, height);
                terminal.draw(&frame)?;
            }
            None => {
                let text = view::render_batch(&self.header, &self.rows, self.view.sort, self.limit);
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
        }
        Ok(())
    }
}

impl Watch for Top {
    fn refresh_every(&self) -> Duration {
        self.refresh
    }

    fn refresh(&mut self, tracker: &mut Tracker, lost_events: u64) -> anyhow::Result<Flow> {
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
                exited: p.exited,
            })
            .collect();
        self.rows = self.rates.update(now, figures);
        // Shown once as exited, then forgotten: top may run for days.
        tracker.forget_exited();
        self.header = Header {
            elapsed_secs: (now - self.started_ns) as f64 / 1e9,
            processes: tracker.processes.len(),
            lost_events,
            refresh_secs: self.refresh.as_secs_f64(),
        };
        self.draw()?;
        Ok(Flow::Continue)
    }

    fn reads_keys(&self) -> bool {
        self.terminal.is_some()
    }

    fn keys(&mut self, keys: &[u8]) -> anyhow::Result<Flow> {
        // An escape sequence (an arrow key, say) is not a key of ours; a lone Esc is.
        if keys.len() > 1 && keys[0] == 0x1b {
            return Ok(Flow::Continue);
        }
        let mut redraw = false;
        for &key in keys {
            match self.view.key(key) {
                Action::Quit => return Ok(Flow::Stop),
                Action::Redraw => redraw = true,
                Action::None => {}
            }
        }
        if redraw {
            self.draw()?;
        }
        Ok(Flow::Continue)
    }
}

pub fn run(args: TopOptions) -> anyhow::Result<()> {
    let filter = ProcessFilter::new(&args.filter)?;
    let layout = probes::check_machine()?;
    let interactive =
        !args.batch && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let (probes, events) = Probes::load(&LoadOptions {
        ring_buffer_bytes: args.ring_buffer_bytes,
        // No stacks: top shows processes, not call sites.
        stack_cache_slots: 1,
        kernel_stacks: false,
        fault_stack_sample: 0,
        filter: filter.kernel(std::process::id()),
        user_stacks: false,
        layout,
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
    let terminal = if interactive {
        terminal::restore_on_panic();
        Some(Terminal::enter()?)
    } else {
        None
    };
    let mut top = Top {
        view: View::new(args.sort),
        rates: Rates::new(),
        rows: Vec::new(),
        header: Header {
            elapsed_secs: 0.0,
            processes: session.tracker.processes.len(),
            lost_events: 0,
            refresh_secs: args.refresh.as_secs_f64(),
        },
        started_ns: session.tracker.started_ns,
        refresh: args.refresh,
        terminal,
        limit: args.limit,
    };
    let result = runtime.block_on(session.run(events, stop, args.duration, Some(&mut top)));
    // Leave the alternate screen before anything more is printed.
    drop(top);
    result?;
    crate::note!("memprof: lost events: {}", session.tracker.lost_events);
    Ok(())
}
