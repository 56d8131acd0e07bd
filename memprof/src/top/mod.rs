//! `memprof top`: a live view of every traced process, sorted by what grows fastest.
pub mod terminal;
pub mod view;

use std::{
    io::{IsTerminal as _, Write as _},
    time::Duration,
};

use crate::{
    cli::TopArgs,
    filter::ProcessFilter,
    probes::{LoadOptions, Probes},
    run,
    session::{self, Flow, Origin, Session, Watch},
};
use terminal::Terminal;
use view::{Action, Figures, Header, Rates, Row, View};

/// `top` keeps no timeline: one sample per process per year.
const NO_TIMELINE: Duration = Duration::from_secs(365 * 24 * 3600);

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

    fn refresh(&mut self, session: &mut Session) -> anyhow::Result<Flow> {
        let now = session::monotonic_ns();
        let figures = session
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
        session.processes.retain(|_, p| !p.exited);
        self.header = Header {
            elapsed_secs: (now - self.started_ns) as f64 / 1e9,
            processes: session.processes.len(),
            lost_events: session.lost_events_so_far(),
            refresh_secs: self.refresh.as_secs_f64(),
        };
        self.draw()?;
        Ok(Flow::Continue)
    }

    fn reads_keys(&self) -> bool {
        self.terminal.is_some()
    }

    fn keys(&mut self, keys: &[u8], _session: &Session) -> anyhow::Result<Flow> {
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

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let filter = ProcessFilter::new(&args.filter)?;
    let layout = run::check_machine()?;
    let interactive =
        !args.batch && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let (probes, events) = Probes::load(&LoadOptions {
        ring_buffer_bytes: args.ring_buffer_size,
        // No stacks: top shows processes, not call sites.
        stack_map_entries: 1,
        kernel_stacks: false,
        fault_stack_sample: 0,
        filter: filter.kernel(std::process::id()),
        user_stacks: false,
        layout,
    })?;
    let mut session = Session::new(probes, 0, Origin::All, NO_TIMELINE);
    let running = session.trace_running(&filter)?;
    eprintln!(
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
            processes: session.processes.len(),
            lost_events: 0,
            refresh_secs: args.refresh.as_secs_f64(),
        },
        started_ns: session.started_ns,
        refresh: args.refresh,
        terminal,
        limit: args.limit,
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(session.run(events, args.duration, Some(&mut top)));
    // Leave the alternate screen before anything more is printed.
    drop(top);
    result?;
    eprintln!("memprof: lost events: {}", session.lost_events);
    Ok(())
}
