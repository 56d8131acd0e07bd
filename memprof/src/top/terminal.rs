//! The interactive terminal of `memprof top`: raw mode and the alternate screen, left clean on
//! every way out. Keys are read by the caller from stdin, not here.
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::{
    cursor, execute, queue,
    terminal::{self, ClearType},
};

/// Whether the terminal is in raw mode on the alternate screen, so that it is restored once
/// (by the panic hook or by Drop, whichever comes first) and never when it was not entered,
/// e.g. in batch mode where stdout may be a file.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// The terminal in raw mode on the alternate screen, cursor hidden, until dropped.
pub struct Terminal {
    out: io::Stdout,
}

impl Terminal {
    /// Enables raw mode, enters the alternate screen and hides the cursor.
    pub fn enter() -> io::Result<Terminal> {
        terminal::enable_raw_mode()?;
        ENTERED.store(true, Ordering::SeqCst);
        // Built before the next step can fail, so that Drop undoes raw mode then too.
        let mut entered = Terminal { out: io::stdout() };
        execute!(entered.out, terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(entered)
    }

    /// Draws a frame of lines joined with "\r\n" from the top left corner, clearing whatever
    /// the previous frame left, and flushes it in one write so that it does not flicker.
    pub fn draw(&mut self, frame: &str) -> io::Result<()> {
        let mut buffer = Vec::with_capacity(frame.len() + 1024);
        let lines: Vec<&str> = frame.split("\r\n").collect();
        // Below the frame first: clearing after writing a full-width line would erase its
        // last char on terminals that keep the cursor on it.
        let below = u16::try_from(lines.len()).unwrap_or(u16::MAX);
        queue!(
            buffer,
            cursor::MoveTo(0, below),
            terminal::Clear(ClearType::FromCursorDown)
        )?;
        for (row, line) in (0..=u16::MAX).zip(&lines) {
            queue!(
                buffer,
                cursor::MoveTo(0, row),
                terminal::Clear(ClearType::CurrentLine)
            )?;
            buffer.extend_from_slice(line.as_bytes());
        }
        let mut out = self.out.lock();
        out.write_all(&buffer)?;
        out.flush()
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

/// The terminal's width and height in chars; 80x24 when it cannot be told.
pub fn size() -> (u16, u16) {
    match terminal::size() {
        Ok((width, height)) if width > 0 && height > 0 => (width, height),
        _ => (80, 24),
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
