//! A TCP forwarder from a free port on the host's 127.0.0.1 into a network
//! namespace: how the lab makes the controller's operator API (the
//! `pimesh` CLI, the dashboard) reachable from the host without putting a
//! 10.x address on the host; and the other way, from a namespace's
//! 127.0.0.1 to the host's (the test API server, for a Kubernetes-mode
//! controller inside the lab). It lives as long as the lab: dropping it
//! closes the listener; connections in flight end when either side closes
//! (the controller is stopped at teardown).

use crate::process::{connect_in, listen_in};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// Limit on connecting to the target inside the namespace.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running forwarder; dropping it stops accepting.
#[derive(Debug)]
pub struct Forward {
    /// The host-side address (127.0.0.1, a free port).
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forward {
    /// Listens on 127.0.0.1:0 and forwards each connection to `target`
    /// inside namespace `netns`.
    ///
    /// # Errors
    ///
    /// The listener cannot be bound.
    pub fn start(netns: &str, target: SocketAddr) -> std::io::Result<Forward> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        Forward::run(listener, Some(netns.to_string()), target)
    }

    /// Listens on `listen` inside namespace `netns` and forwards each
    /// connection to `target` in the host's namespace (the other way round
    /// from [`Forward::start`]).
    ///
    /// # Errors
    ///
    /// The namespace cannot be entered or the listener cannot be bound.
    pub fn out_of(netns: &str, listen: SocketAddr, target: SocketAddr) -> std::io::Result<Forward> {
        Forward::run(listen_in(netns, listen)?, None, target)
    }

    /// Serves `listener` (in whatever namespace it was bound), connecting
    /// to `target` inside `netns` (`None`: the host's namespace).
    fn run(
        listener: TcpListener,
        netns: Option<String>,
        target: SocketAddr,
    ) -> std::io::Result<Forward> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pml-forward".into())
            .spawn(move || accept_loop(listener, netns.as_deref(), target, &flag))?;
        Ok(Forward {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

fn accept_loop(listener: TcpListener, netns: Option<&str>, target: SocketAddr, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let netns = netns.map(str::to_string);
                let _ = std::thread::Builder::new()
                    .name("pml-forward-conn".into())
                    .spawn(move || {
                        let server = match &netns {
                            Some(ns) => connect_in(ns, target, CONNECT_TIMEOUT),
                            None => TcpStream::connect_timeout(&target, CONNECT_TIMEOUT),
                        };
                        if let Ok(server) = server {
                            splice(client, server);
                        }
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Copies both ways until both directions end.
fn splice(client: TcpStream, server: TcpStream) {
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let mut c = client;
        let mut s = server;
        let _ = std::io::copy(&mut c, &mut s);
        let _ = s.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut s2, &mut c2);
    let _ = c2.shutdown(Shutdown::Write);
    let _ = up.join();
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
