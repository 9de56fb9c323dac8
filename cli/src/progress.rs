//! Provisioning progress on stderr: a spinner on a terminal, plain lines with `--verbose` elsewhere,
//! nothing otherwise (an agent's piped output must stay clean).

use std::io::Write;
use std::time::Instant;

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Spinner,
    Lines,
    Quiet,
}

pub struct Progress {
    mode: Mode,
    step: String,
    started: Instant,
    frame: usize,
    /// The spinner line is on screen and must be cleared before anything else is printed.
    drawn: bool,
    done: bool,
}

impl Progress {
    /// `tty`: stderr is a terminal.
    pub fn new(tty: bool, verbose: bool, started: Instant) -> Self {
        let mode = match (tty, verbose) {
            (true, _) => Mode::Spinner,
            (false, true) => Mode::Lines,
            (false, false) => Mode::Quiet,
        };
        Self { mode, step: String::new(), started, frame: 0, drawn: false, done: false }
    }

    /// Whether the spinner wants ticks.
    pub fn spinning(&self) -> bool {
        self.mode == Mode::Spinner && !self.done
    }

    /// Whether anything (a line or the spinner) is shown at all.
    pub fn visible(&self) -> bool {
        self.mode != Mode::Quiet
    }

    pub fn elapsed_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    /// Moves to a new step (shown at once).
    pub fn step(&mut self, text: impl Into<String>) {
        if self.done {
            return;
        }
        let text = text.into();
        if text == self.step {
            return;
        }
        self.step = text;
        match self.mode {
            Mode::Spinner => self.draw(),
            Mode::Lines => eprintln!("openshell: {}", self.step),
            Mode::Quiet => {}
        }
    }

    /// Advances the spinner.
    pub fn tick(&mut self) {
        if self.spinning() {
            self.frame = (self.frame + 1) % FRAMES.len();
            self.draw();
        }
    }

    /// Prints a line on stderr without tearing the spinner.
    pub fn line(&mut self, text: &str) {
        self.clear();
        eprintln!("{text}");
        if self.spinning() {
            self.draw();
        }
    }

    /// Stops for good, leaving `last` (when given and progress is shown) as the final line.
    pub fn finish(&mut self, last: Option<String>) {
        if self.done {
            return;
        }
        self.clear();
        self.done = true;
        if let (Some(l), true) = (last, self.visible()) {
            eprintln!("openshell: {l}");
        }
    }

    fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }

    fn draw(&mut self) {
        let secs = self.started.elapsed().as_secs_f32();
        let mut err = std::io::stderr().lock();
        // Display errors are not worth failing a command over.
        let _ = write!(err, "\r\x1b[2K{} {} ({secs:.1}s)", FRAMES[self.frame], self.step);
        let _ = err.flush();
        self.drawn = true;
    }
}
