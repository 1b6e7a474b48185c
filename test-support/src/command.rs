//! [`run`]: a command to completion within a time limit.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs `c` with stdin from /dev/null and returns its status, stdout and
/// stderr, as [`Command::output`] does, but within `timeout`: a command
/// still running then is killed, and the call panics (failing the test)
/// with the command, the limit and what it printed (not waiting for a
/// grandchild that keeps its pipes open). Panics too when the program
/// cannot be started.
///
/// Both pipes are read while the command runs: a child writing more than a
/// pipe buffer (64 KiB) would otherwise block and never finish.
pub fn run(c: &mut Command, timeout: Duration) -> Output {
    let mut child = spawn(c, Stdio::piped());
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("waiting for {c:?}: {e}"),
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // A grandchild may still hold the pipes open: 2 s for the rest.
            let end = Instant::now() + Duration::from_secs(2);
            while !(out.is_finished() && err.is_finished()) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let text = |h: JoinHandle<Vec<u8>>| {
                if h.is_finished() {
                    String::from_utf8_lossy(&joined(h)).into_owned()
                } else {
                    "(held open by another process)".to_string()
                }
            };
            panic!(
                "{c:?} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                text(out),
                text(err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: joined(out),
        stderr: joined(err),
    }
}

/// Spawns `c` with stdin from /dev/null, stdout to `stdout` and stderr
/// piped; panics (failing the test) when it cannot be started.
pub(crate) fn spawn(c: &mut Command, stdout: Stdio) -> Child {
    c.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {c:?}: {e}"))
}

/// Reads `r` to its end on a thread of its own.
fn drain(r: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// What a [`drain`] thread read (nothing if it panicked).
fn joined(h: JoinHandle<Vec<u8>>) -> Vec<u8> {
    h.join().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_of_a_large_writer_and_its_status() {
        // 1 MiB on stdout: more than a pipe buffer.
        let out = run(
            Command::new("sh").args(["-c", "head -c 1048576 /dev/zero; echo e >&2; exit 3"]),
            Duration::from_secs(20),
        );
        assert_eq!(out.stdout.len(), 1 << 20);
        assert_eq!(out.stderr, b"e\n");
        assert_eq!(out.status.code(), Some(3));
    }

    /// The shell's `sleep` outlives it with the pipes: no waiting for it.
    #[test]
    #[should_panic(expected = "did not finish within")]
    fn a_command_past_its_limit_fails_the_test() {
        run(
            Command::new("sh").args(["-c", "echo started; sleep 10"]),
            Duration::from_millis(300),
        );
    }
}
