//! A lab leaves nothing behind: `pimesh-lab` interrupted (SIGINT, SIGTERM)
//! at every stage of its setup and once it is up; a lab killed with SIGKILL
//! (its children die with it, `down` removes the rest without touching a
//! live lab); a library lab in a test that panics. "Nothing" is checked:
//! no namespace, link, process or lock file of the lab, and the host's
//! iptables rules unchanged. Needs root.

mod support;

use pimesh_lab::{spec, Lab, Options};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use support::*;

/// `pimesh-lab up --pods 2 --id ID` with its stdout lines on a channel.
fn start_lab(id: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(lab_bin())
        .args(["up", "--pods", "2", "--id", id, "--interval", "0s"])
        .arg("--bin-dir")
        .arg(bins().proxy.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for a stdout line containing `marker` (60 s at most).
fn wait_line(rx: &mpsc::Receiver<String>, marker: &str, seen: &mut Vec<String>) {
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let hit = line.contains(marker);
                seen.push(line);
                if hit {
                    return;
                }
            }
            Err(_) => panic!("no line with {marker:?}; output:\n{}", seen.join("\n")),
        }
    }
}

fn wait_exit(child: &mut Child) -> i32 {
    let end = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            panic!("pimesh-lab did not exit after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(child.id() as i32, sig) };
}

#[test]
fn interrupted_at_every_stage_leaves_nothing() {
    if !root_or_skip() {
        return;
    }
    let _ = bins();
    let rules = host_rule_count();
    let stages = [
        ("network up", libc::SIGINT, 130),
        ("controller up", libc::SIGTERM, 130),
        ("init done", libc::SIGINT, 130),
        ("mTLS ready", libc::SIGHUP, 130),
        ("is up", libc::SIGINT, 0),
    ];
    for (marker, sig, code) in stages {
        let id = test_id();
        let (mut child, rx) = start_lab(&id);
        let mut seen = Vec::new();
        wait_line(&rx, marker, &mut seen);
        assert!(
            !leftovers(&id).is_empty(),
            "nothing to clean after {marker:?}?"
        );
        signal(&child, sig);
        let got = wait_exit(&mut child);
        seen.extend(rx.try_iter());
        // The signal may land after the last setup step: then the lab was
        // up and ends normally.
        let ok = got == code || (code == 130 && got == 0 && marker == "mTLS ready");
        assert!(
            ok,
            "after {marker:?}: exit {got}, wanted {code}:\n{}",
            seen.join("\n")
        );
        assert_nothing_left(&id, rules);
    }
}

#[test]
fn killed_lab_is_removed_by_down_and_live_labs_are_not() {
    if !root_or_skip() {
        return;
    }
    let rules = host_rule_count();
    // A live library lab that `down` must leave alone.
    let live = Lab::up(&spec::simple_pods(1), &bins(), &Options::default()).unwrap();
    let id = test_id();
    let (mut child, rx) = start_lab(&id);
    wait_line(&rx, "is up", &mut Vec::new());
    let pids = lab_pids(&id);
    assert!(pids.len() >= 5, "controller, 2 proxies, 2 apps: {pids:?}");
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    // Its children die with it (PR_SET_PDEATHSIG); its namespaces stay.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !lab_pids(&id).is_empty() {
        assert!(
            std::time::Instant::now() < end,
            "orphans: {:?}",
            lab_pids(&id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        leftovers(&id).iter().any(|l| l.contains("-pod-1")),
        "{:?}",
        leftovers(&id)
    );
    let out = run(Command::new(lab_bin()).arg("down"), Duration::from_secs(60));
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&id),
        "{out:?}"
    );
    assert_nothing_left(&id, rules);
    // The live lab is untouched and still answers.
    let live_id = live.names.id.clone();
    assert!(leftovers(&live_id).len() >= 5, "{:?}", leftovers(&live_id));
    assert!(live.metrics("pod-1").unwrap().contains("process_"));
    drop(live);
    assert_nothing_left(&live_id, rules);
}

#[test]
fn library_lab_is_removed_when_a_test_panics() {
    if !root_or_skip() {
        return;
    }
    let rules = host_rule_count();
    let id = test_id();
    let opts = Options {
        id: Some(id.clone()),
        ..Options::default()
    };
    let bins = bins();
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::up(&spec::simple_pods(1), &bins, &opts).unwrap();
        assert!(leftovers(&lab.names.id).len() >= 4);
        panic!("a failing test");
    });
    assert!(result.is_err());
    assert_nothing_left(&id, rules);
    // A lab that fails half-way (an app that never listens) removes what
    // it created before returning the error.
    let bad = vec![spec::PodSpec::new("bad", &[8080]).command("exit 3")];
    let err = Lab::up(&bad, &bins, &opts).unwrap_err();
    assert!(err.to_string().contains("bad/app"), "{err}");
    assert_nothing_left(&id, rules);
    // Bad input: a pod name the lab cannot use.
    let err = Lab::up(&[spec::PodSpec::new("Bad", &[1])], &bins, &opts).unwrap_err();
    assert!(err.to_string().contains("\"Bad\""), "{err}");
}

#[test]
fn bad_usage_exits_64_naming_the_flag() {
    for (args, needle) in [
        (&["up", "--pod", "web:http"][..], "http"),
        (&["up", "--pods", "1", "--id", "TOO-LONG"][..], "TOO-LONG"),
        (&["up", "--pod", "a:1", "--pod", "a:2"][..], "\"a\""),
        (&["demo", "--rate", "0"][..], "--rate"),
        (&["demo", "--demo-dir", "/nonexistent"][..], "/nonexistent"),
        (&["up", "--pods", "1", "--duration", "0s"][..], "--duration"),
        (&["up"][..], "--pods"),
    ] {
        let out = run(Command::new(lab_bin()).args(args), Duration::from_secs(10));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
