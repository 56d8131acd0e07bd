//! The interactive terminal of `memprof top`: raw mode and the alternate screen, left clean on
//! every way out, drawn with ratatui; and the keys and resizes read with crossterm.
use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossterm::{cursor, event, execute, terminal};
use ratatui::{Frame, backend::CrosstermBackend};

/// Whether the terminal is in raw mode on the alternate screen, so that it is restored once
/// (by the panic hook or by Drop, whichever comes first) and never when it was not entered,
/// e.g. in batch mode where stdout may be a file.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// The terminal in raw mode on the alternate screen, cursor hidden, until dropped.
pub struct Terminal {
    screen: ratatui::Terminal<CrosstermBackend<Stdout>>,
}

impl Terminal {
    /// Enables raw mode, enters the alternate screen and hides the cursor.
    pub fn enter() -> io::Result<Terminal> {
        let screen = ratatui::Terminal::new(CrosstermBackend::new(io::stdout()))?;
        terminal::enable_raw_mode()?;
        ENTERED.store(true, Ordering::SeqCst);
        // Built before the next step can fail, so that Drop undoes raw mode then too.
        let entered = Terminal { screen };
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(entered)
    }

    /// Draws a frame: ratatui writes only the cells that changed since the last one, and
    /// after a resize clears the screen and fits the frame to its new size.
    pub fn draw(&mut self, render: impl FnOnce(&mut Frame)) -> io::Result<()> {
        self.screen.draw(render).map(drop)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        restore();
    }
}

/// Shows the cursor, leaves the alternate screen and disables raw mode, if entered; errors
/// are ignored, as there is nothing better to do on the way out.
fn restore() {
    if ENTERED.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Restores the terminal before a panic message is printed: on the alternate screen in raw
/// mode it would be lost or garbled.
pub fn restore_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        print(info);
    }));
}

/// Whether the terminal on stdin hung up. crossterm's reader retries a read that fails
/// for ever, so it must not be asked then.
fn hung_up() -> bool {
    let mut stdin = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own, no waiting.
    let ready = unsafe { libc::poll(&mut stdin, 1, 0) };
    ready > 0 && stdin.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// The keys and resizes waiting, read without blocking; None when the terminal is gone.
pub fn events() -> io::Result<Option<Vec<event::Event>>> {
    let mut events = Vec::new();
    loop {
        if hung_up() {
            return Ok(None);
        }
        if !event::poll(Duration::ZERO)? {
            return Ok(Some(events));
        }
        events.push(event::read()?);
    }
}
