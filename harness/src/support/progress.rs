//! Progress for long work: a spinner per step on a terminal, plain timestamped
//! lines elsewhere (CI logs, pipes), so a person sees that something moves and a
//! log reader sees when each step started and ended.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    fancy: bool,
    quiet: bool,
    started: Instant,
    step: Mutex<Option<(String, Instant, Option<ProgressBar>)>>,
    /// Every ended step: its short name (before any `:`) and how long it took.
    ended: Mutex<Vec<(String, Duration)>>,
}

impl Progress {
    /// Spinners only on a terminal and outside CI.
    pub fn new(quiet: bool) -> Progress {
        let fancy = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        Progress {
            inner: Arc::new(Inner {
                fancy,
                quiet,
                started: Instant::now(),
                step: Mutex::new(None),
                ended: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Prints nothing: for tests and library callers.
    pub fn silent() -> Progress {
        Progress {
            inner: Arc::new(Inner {
                fancy: false,
                quiet: true,
                started: Instant::now(),
                step: Mutex::new(None),
                ended: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts a named step (ending the previous one).
    pub fn step(&self, name: &str) {
        self.finish_step(true);
        let bar = if self.inner.fancy && !self.inner.quiet {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            Some(bar)
        } else {
            self.line(&format!("{name}: started"));
            None
        };
        *self.inner.step.lock().unwrap() = Some((name.to_string(), Instant::now(), bar));
    }

    /// A message within the current step.
    pub fn info(&self, msg: &str) {
        let guard = self.inner.step.lock().unwrap();
        match guard.as_ref() {
            Some((_, _, Some(bar))) => {
                bar.set_message(msg.to_string());
            }
            Some((name, _, None)) => {
                let name = name.clone();
                drop(guard);
                self.line(&format!("{name}: {msg}"));
            }
            None => {
                drop(guard);
                self.line(msg);
            }
        }
    }

    /// A line that stays (a result worth keeping on screen).
    pub fn note(&self, msg: &str) {
        let guard = self.inner.step.lock().unwrap();
        match guard.as_ref() {
            Some((_, _, Some(bar))) => bar.println(format!("  {msg}")),
            _ => {
                drop(guard);
                self.line(&format!("  {msg}"));
            }
        }
    }

    /// Ends the current step, saying whether it succeeded and how long it took.
    pub fn finish_step(&self, ok: bool) {
        let Some((name, started, bar)) = self.inner.step.lock().unwrap().take() else {
            return;
        };
        let short = name.split(':').next().unwrap_or(&name).trim().to_string();
        self.inner
            .ended
            .lock()
            .unwrap()
            .push((short, started.elapsed()));
        let took = format_duration(started.elapsed());
        let verdict = if ok { "done" } else { "FAILED" };
        match bar {
            Some(bar) => {
                bar.finish_and_clear();
                if !self.inner.quiet {
                    eprintln!("{} {name} ({took})", if ok { "✓" } else { "✗" });
                }
            }
            None => self.line(&format!("{name}: {verdict} in {took}")),
        }
    }

    /// Where the time went so far: every ended step, in order, with how
    /// long it took (a step that ran twice is listed twice).
    pub fn timeline(&self) -> Vec<(String, Duration)> {
        self.inner.ended.lock().unwrap().clone()
    }

    pub fn elapsed(&self) -> Duration {
        self.inner.started.elapsed()
    }

    fn line(&self, msg: &str) {
        if self.inner.quiet {
            return;
        }
        let now = chrono::Utc::now().format("%H:%M:%S");
        eprintln!("[{now}] {msg}");
    }

    /// A callback for modules that only need to report lines.
    pub fn reporter(&self) -> impl Fn(&str) + Send + Sync + '_ {
        move |m: &str| self.info(m)
    }
}

/// A duration in reports (`--json`, verify.json): seconds, to a tenth.
pub fn serialize_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 10.0).round() / 10.0)
}

pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let m = (s / 60.0).floor();
        format!("{m:.0}m{:02.0}s", s - m * 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_lists_every_ended_step_by_its_short_name() {
        let progress = Progress::silent();
        progress.step("build");
        progress.step("verify: 5 scenarios, up to 2 at once");
        assert_eq!(progress.timeline().len(), 1, "verify has not ended yet");
        progress.finish_step(false);
        progress.finish_step(true);
        let names: Vec<String> = progress.timeline().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["build", "verify"]);
    }

    #[test]
    fn durations_read_as_seconds_then_minutes() {
        assert_eq!(format_duration(Duration::from_millis(9_340)), "9.3s");
        assert_eq!(format_duration(Duration::from_secs(92)), "1m32s");
    }
}
