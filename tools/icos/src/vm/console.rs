//! A running VM whose serial console a program drives, like `expect`: the boot tests' QEMU.
//!
//! A reader thread collects everything QEMU writes to stdout (the serial console in
//! [`SerialMode::Pipe`](super::SerialMode::Pipe)) and appends it to a transcript file as it comes,
//! so that a failing or hanging test leaves the whole boot log behind. Output is matched as raw
//! bytes: the console's `\r\n` and ANSI escapes stay as they are, and text is decoded lossily as
//! UTF-8 only when it is returned.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::VmError;
use crate::io_error::PathIoError;

/// How often a wait checks whether the process has exited.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the reader gets to collect the last output after the process exited: a grandchild
/// can keep the pipe open.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// How much output (in characters) an error shows.
const TAIL_CHARS: usize = 2000;

/// A process (QEMU, or anything else in tests) with its stdout read into a buffer and its stdin
/// writable. Dropping it kills the process.
pub struct VmConsole {
    program: String,
    child: Child,
    stdin: ChildStdin,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    stderr_log: PathBuf,
    /// Output before this byte offset was returned by an `expect`; matching starts here.
    consumed: usize,
}

#[derive(Default)]
struct Shared {
    output: Mutex<Output>,
    changed: Condvar,
}

#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    /// The process's stdout reached its end.
    closed: bool,
}

impl Shared {
    /// The output; a reader thread that panicked cannot leave the buffer half-updated.
    fn lock(&self) -> MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How a wait ended.
enum Outcome<T> {
    Found(T),
    TimedOut,
    Exited(ExitStatus),
}

impl VmConsole {
    /// Starts `argv` (program first) with stdin and stdout on pipes, stdout copied to `transcript`
    /// and stderr written to `stderr_log`; both files are created anew and may be the same file.
    pub fn spawn(argv: &[String], transcript: &Path, stderr_log: &Path) -> Result<VmConsole, VmError> {
        let (program, args) = argv.split_first().ok_or(VmError::EmptyArgv)?;
        let create = |path: &Path| File::create(path).map_err(PathIoError::with("write", path));
        let transcript_file = create(transcript)?;
        let stderr_file = if stderr_log == transcript {
            transcript_file.try_clone().map_err(PathIoError::with("write", stderr_log))?
        } else {
            create(stderr_log)?
        };
        let spawn_error = |source| VmError::Spawn { program: program.clone(), source };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr_file)
            .spawn()
            .map_err(spawn_error)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_error(io::Error::other("no pipes to the process")));
        };
        let shared = Arc::new(Shared::default());
        let reader_shared = Arc::clone(&shared);
        let reader = thread::spawn(move || read_output(stdout, transcript_file, &reader_shared));
        Ok(VmConsole {
            program: program.clone(),
            child,
            stdin,
            shared,
            reader: Some(reader),
            stderr_log: stderr_log.to_owned(),
            consumed: 0,
        })
    }

    /// Waits until the output not yet consumed contains `pattern`, then consumes and returns it up
    /// to and including the match.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String, VmError> {
        self.expect_any(&[pattern], timeout).map(|(_, text)| text)
    }

    /// Waits until the output not yet consumed contains one of `patterns`; consumes and returns it
    /// up to and including the earliest match, with the index of the pattern that matched (the
    /// first in `patterns` when several match at the same place).
    pub fn expect_any(&mut self, patterns: &[&str], timeout: Duration) -> Result<(usize, String), VmError> {
        match self.wait_for(patterns, timeout)? {
            Outcome::Found((index, end)) => {
                let text = String::from_utf8_lossy(&self.shared.lock().bytes[self.consumed..end]).into_owned();
                self.consumed = end;
                Ok((index, text))
            }
            Outcome::TimedOut => Err(VmError::Timeout { pattern: describe(patterns), timeout, tail: self.tail() }),
            Outcome::Exited(status) => Err(self.exited(patterns, status)),
        }
    }

    /// Checks that `pattern` does not appear in the output not yet consumed within `duration`
    /// (output already there counts); consumes nothing.
    pub fn absent_for(&mut self, pattern: &str, duration: Duration) -> Result<(), VmError> {
        let started = Instant::now();
        match self.wait_for(&[pattern], duration)? {
            Outcome::Found((_, end)) => {
                let output = String::from_utf8_lossy(&self.shared.lock().bytes[..end]).into_owned();
                Err(VmError::Appeared {
                    pattern: pattern.to_owned(),
                    after: started.elapsed(),
                    duration,
                    tail: last_chars(&output, TAIL_CHARS).to_owned(),
                })
            }
            Outcome::TimedOut => Ok(()),
            Outcome::Exited(status) => Err(self.exited(&[pattern], status)),
        }
    }

    /// The output after the text the last `expect` returned, decoded lossily.
    pub fn output_since_last_expect(&self) -> String {
        String::from_utf8_lossy(&self.shared.lock().bytes[self.consumed..]).into_owned()
    }

    /// Writes `text` to the process's stdin: the serial console's input.
    pub fn send(&mut self, text: &str) -> Result<(), VmError> {
        self.stdin
            .write_all(text.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|source| VmError::Send { source })
    }

    /// Waits for the process to exit (after a guest power-off, say) and for its last output.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                self.drain();
                return Ok(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(VmError::ExitTimeout { program: self.program.clone(), timeout });
            }
            thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>, VmError> {
        self.child.try_wait().map_err(|source| VmError::Wait { program: self.program.clone(), source })
    }

    /// Waits until the output from `consumed` on contains one of `patterns` (giving the pattern's
    /// index and the end of the earliest match), the process exits, or `timeout` passes.
    fn wait_for(&mut self, patterns: &[&str], timeout: Duration) -> Result<Outcome<(usize, usize)>, VmError> {
        let deadline = Instant::now() + timeout;
        // Matches cannot start before `from`: the output before it was searched already, except for
        // the last bytes, where a match may have been cut off by the end of a read.
        let overlap = patterns.iter().map(|pattern| pattern.len().saturating_sub(1)).max().unwrap_or(0);
        let mut from = self.consumed;
        let mut exited: Option<(ExitStatus, Instant)> = None;
        loop {
            {
                let output = self.shared.lock();
                if let Some(found) = earliest_match(&output.bytes, from, patterns) {
                    return Ok(Outcome::Found(found));
                }
                from = self.consumed.max(output.bytes.len().saturating_sub(overlap));
                let now = Instant::now();
                if let Some((status, since)) = exited {
                    if output.closed || since.elapsed() >= DRAIN_TIME || now >= deadline {
                        return Ok(Outcome::Exited(status));
                    }
                }
                if now >= deadline {
                    return Ok(Outcome::TimedOut);
                }
                let wait = POLL_INTERVAL.min(deadline - now);
                // Woken by new output, or after `wait` to look at the process.
                let _woken = self.shared.changed.wait_timeout(output, wait).unwrap_or_else(PoisonError::into_inner);
            }
            if exited.is_none() {
                exited = self.try_wait()?.map(|status| (status, Instant::now()));
            }
        }
    }

    /// Waits (a bounded time) for the reader to reach the end of the output.
    fn drain(&self) {
        let deadline = Instant::now() + DRAIN_TIME;
        let mut output = self.shared.lock();
        while !output.closed {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            output = self.shared.changed.wait_timeout(output, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn exited(&self, patterns: &[&str], status: ExitStatus) -> VmError {
        let stderr = fs::read(&self.stderr_log).unwrap_or_default();
        VmError::Exited {
            program: self.program.clone(),
            pattern: describe(patterns),
            status: status.to_string(),
            stderr_tail: last_chars(&String::from_utf8_lossy(&stderr), TAIL_CHARS).to_owned(),
            tail: self.tail(),
        }
    }

    /// The end of all output, for error messages.
    fn tail(&self) -> String {
        last_chars(&String::from_utf8_lossy(&self.shared.lock().bytes), TAIL_CHARS).to_owned()
    }
}

impl Drop for VmConsole {
    fn drop(&mut self) {
        // Errors are moot here: the process is gone either way, or was gone already.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.drain();
        // A reader still blocked (a grandchild holds the pipe) is left to end on its own.
        if self.shared.lock().closed {
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
        }
    }
}

/// The reader thread: stdout into the buffer and the transcript until the pipe ends.
fn read_output(mut stdout: ChildStdout, mut transcript: File, shared: &Shared) {
    let mut buffer = [0u8; 8192];
    loop {
        match stdout.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => {
                // The transcript is a debugging aid: a full disk must not stop the VM's driver.
                let _ = transcript.write_all(&buffer[..count]);
                shared.lock().bytes.extend_from_slice(&buffer[..count]);
                shared.changed.notify_all();
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    shared.lock().closed = true;
    shared.changed.notify_all();
}

/// The earliest match of any of `patterns` starting at or after `from`, as (pattern index, end).
fn earliest_match(bytes: &[u8], from: usize, patterns: &[&str]) -> Option<(usize, usize)> {
    let haystack = &bytes[from..];
    patterns
        .iter()
        .enumerate()
        .filter_map(|(index, pattern)| {
            let needle = pattern.as_bytes();
            let start = if needle.is_empty() {
                Some(0)
            } else {
                haystack.windows(needle.len()).position(|window| window == needle)
            };
            start.map(|start| (start, index, from + start + needle.len()))
        })
        .min()
        .map(|(_, index, end)| (index, end))
}

fn describe(patterns: &[&str]) -> String {
    match patterns {
        [pattern] => (*pattern).to_owned(),
        _ => format!("any of {patterns:?}"),
    }
}

/// The last `count` characters of `text`.
fn last_chars(text: &str, count: usize) -> &str {
    match text.char_indices().rev().nth(count.saturating_sub(1)) {
        Some((index, _)) => &text[index..],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(10);

    fn sh(script: &str, dir: &Path) -> VmConsole {
        let argv = ["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        VmConsole::spawn(&argv, &dir.join("transcript"), &dir.join("stderr")).unwrap()
    }

    #[test]
    fn expect_send_and_absent_for() {
        let dir = tempfile::tempdir().unwrap();
        // The prompt arrives in two writes, so a match spans reads; the bytes include \r\n and
        // an invalid UTF-8 byte, as serial consoles produce.
        let script = r#"printf 'booting\r\n\377\033[0mguestos log'; sleep 0.3; printf 'in: '; read line; echo "user=$line"; exec sleep 30"#;
        let mut console = sh(script, dir.path());
        assert_eq!(console.expect("login: ", LONG).unwrap(), "booting\r\n\u{fffd}\u{1b}[0mguestos login: ");
        assert_eq!(console.output_since_last_expect(), "");
        console.absent_for("user=", Duration::from_millis(300)).unwrap();
        console.send("root\n").unwrap();
        assert_eq!(console.expect("user=root", LONG).unwrap(), "user=root");
        console.absent_for("panic", Duration::from_millis(300)).unwrap();
        assert_eq!(console.output_since_last_expect(), "\n");
        let transcript = fs::read(dir.path().join("transcript")).unwrap();
        assert!(transcript.starts_with(b"booting\r\n\xff\x1b[0mguestos login: user=root"), "{transcript:?}");
    }

    #[test]
    fn timeout_carries_the_pattern_and_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut console = sh("echo 'Welcome to GRUB'; exec sleep 30", dir.path());
        let started = Instant::now();
        let error = console.expect("login:", Duration::from_millis(500)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert!(matches!(&error, VmError::Timeout { pattern, .. } if pattern == "login:"), "{error}");
        let message = error.to_string();
        assert!(message.contains("500ms") && message.contains("Welcome to GRUB"), "{message}");
    }

    #[test]
    fn a_pattern_that_appears_fails_absent_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut console = sh("sleep 0.2; echo 'Kernel panic - not syncing'; exec sleep 30", dir.path());
        let started = Instant::now();
        let error = console.absent_for("Kernel panic", LONG).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(error.to_string().contains("\"Kernel panic\" appeared"), "{error}");
        // Nothing was consumed: the text is still there to expect.
        assert!(console.expect("not syncing", LONG).unwrap().starts_with("Kernel panic"));
    }

    #[test]
    fn expect_any_takes_the_earliest_match() {
        let dir = tempfile::tempdir().unwrap();
        let mut console = sh("echo 'A start job is running'; echo 'login: '; exec sleep 30", dir.path());
        let (index, text) = console.expect_any(&["login: ", "start job"], LONG).unwrap();
        assert_eq!((index, text.as_str()), (1, "A start job"));
        let (index, _) = console.expect_any(&["start job", "login: "], LONG).unwrap();
        assert_eq!(index, 1);
    }

    #[test]
    fn early_exit_reports_status_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let mut console = sh("echo 'guest output'; echo 'qemu: could not open disk' >&2; exit 3", dir.path());
        let error = console.expect("login:", LONG).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, VmError::Exited { .. }), "{message}");
        for part in ["sh exited (exit status: 3)", "could not open disk", "guest output", "\"login:\""] {
            assert!(message.contains(part), "{part}: {message}");
        }
        // Output that came before the exit still matches.
        let mut console = sh("echo 'reboot: Power down'; exit 0", dir.path());
        console.expect("Power down", LONG).unwrap();
        assert!(console.wait_exit(LONG).unwrap().success());
    }

    #[test]
    fn wait_exit_times_out_and_drop_kills() {
        let dir = tempfile::tempdir().unwrap();
        let mut console = sh("exec sleep 30", dir.path());
        let error = console.wait_exit(Duration::from_millis(200)).unwrap_err();
        assert!(error.to_string().contains("sh did not exit within 200ms"), "{error}");
        let pid = console.child.id() as libc::pid_t;
        let started = Instant::now();
        drop(console);
        assert!(started.elapsed() < Duration::from_secs(5));
        // SAFETY: signal 0 only checks whether the process exists.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "the process survived");
    }

    #[test]
    fn stderr_can_share_the_transcript_and_argv_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let argv = ["sh".to_owned(), "-c".to_owned(), "echo out; echo err >&2; exit 0".to_owned()];
        let mut console = VmConsole::spawn(&argv, &log, &log).unwrap();
        console.wait_exit(LONG).unwrap();
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.contains("out\n") && text.contains("err\n"), "{text:?}");
        assert!(matches!(VmConsole::spawn(&[], &log, &log), Err(VmError::EmptyArgv)));
        let missing = ["/nonexistent/qemu".to_owned()];
        let error = VmConsole::spawn(&missing, &log, &log).err().unwrap().to_string();
        assert!(error.contains("cannot start /nonexistent/qemu"), "{error}");
    }

    #[test]
    fn last_chars_counts_characters() {
        assert_eq!(last_chars("abc", 5), "abc");
        assert_eq!(last_chars("aébc", 3), "ébc");
    }
}
