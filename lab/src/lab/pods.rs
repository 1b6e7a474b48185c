//! Starting a pod's parts: `pimesh-proxy init`, the proxy (certified with
//! a join token, mesh destinations, registration hook) and the app, and
//! waiting until each is ready.

use super::{
    service_env, write_file, Error, Lab, CONTROLLER_PROXY_PORT, PROXY_ENV, PROXY_PORTS,
    READY_TIMEOUT,
};
use crate::interrupt;
use crate::process::{command, connect_in, http_get, run, Proc};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

impl Lab {
    pub(super) fn init_pod(&mut self, i: usize) -> Result<(), Error> {
        let pod = &self.pods[i];
        let mut c = command(Some(&pod.netns), None, &self.bins.proxy)?;
        c.args(["init", "--proxy-uid", &self.opts.proxy_uid.to_string()])
            .args(["--iptables-mode", &self.opts.iptables_mode]);
        run(&mut c, Duration::from_secs(30))?;
        Ok(())
    }

    /// `PIMESH_PROXY_MESH_DESTINATIONS` for pod `i`: every other pod's
    /// ports with that pod's identity. (Until discovery lands on main; then
    /// the registry the proxies fill through `PIMESH_PROXY_SERVICE` answers.)
    fn mesh_destinations(&self, i: usize) -> String {
        let mut v = Vec::new();
        for (j, other) in self.pods.iter().enumerate() {
            if j == i {
                continue;
            }
            for port in &other.spec.ports {
                v.push(format!("{}:{port}={}", other.ip, other.spec.identity));
            }
        }
        v.join(",")
    }

    /// A join token for pod `pod`'s identity (and its service, if it
    /// registers one), from the standalone controller.
    fn join_token(&self, pod: &super::Pod) -> Result<String, Error> {
        let mut args = vec!["token", "create", "--identity", &pod.spec.identity];
        // The registration hook: a token bound to the pod's service.
        let service_name = pod
            .spec
            .service
            .as_deref()
            .map(|s| s.split(':').next().unwrap_or(s));
        if let Some(s) = service_name {
            args.extend(["--service", s]);
        }
        let out = self.cli(&args)?;
        out.split_whitespace()
            .find(|w| w.starts_with("pmt_"))
            .map(str::to_string)
            .ok_or_else(|| self.not_ready("pimesh token create printed no token", out.clone()))
    }

    pub(super) fn start_proxy(&mut self, i: usize, anchors: &Path) -> Result<(), Error> {
        let pod = self.pods[i].clone();
        let token = match &self.opts.kube {
            Some(k) => k.tokens.get(&pod.spec.name).cloned().ok_or_else(|| {
                self.not_ready(
                    &format!("no ServiceAccount token for pod {}", pod.spec.name),
                    String::new(),
                )
            })?,
            None => self.join_token(&pod)?,
        };
        let token_file = self.dir.join(format!("{}.token", pod.spec.name));
        write_file(&token_file, &token, 0o600, Some(self.opts.proxy_uid))?;
        let (inbound, outbound, admin) = PROXY_PORTS;
        let mut c = command(
            Some(&pod.netns),
            Some(self.opts.proxy_uid),
            &self.bins.proxy,
        )?;
        c.env(
            "PIMESH_PROXY_INBOUND_LISTEN_ADDR",
            format!("0.0.0.0:{inbound}"),
        )
        .env(
            "PIMESH_PROXY_OUTBOUND_LISTEN_ADDR",
            format!("127.0.0.1:{outbound}"),
        )
        .env("PIMESH_PROXY_ADMIN_LISTEN_ADDR", format!("0.0.0.0:{admin}"))
        .env(
            "PIMESH_PROXY_CONTROLLER_ADDR",
            format!("{}:{CONTROLLER_PROXY_PORT}", self.controller_ip),
        )
        .env("PIMESH_PROXY_TRUST_ANCHORS", anchors)
        .env("PIMESH_PROXY_TOKEN_FILE", &token_file)
        .env("PIMESH_PROXY_IDENTITY", &pod.spec.identity)
        .env(
            "PIMESH_PROXY_WORKLOAD_LABELS",
            format!(
                "namespace={},deployment={},pod={}",
                pod.spec.identity.split('/').next().unwrap_or("lab"),
                pod.spec.name,
                pod.netns
            ),
        )
        .env("PIMESH_PROXY_LOG", &self.opts.proxy_log)
        .env("PIMESH_LAB", &self.names.id);
        // Standalone: static routes between the pods, and the registration
        // of the pod's service. Kubernetes mode: discovery from
        // EndpointSlices alone.
        if self.opts.kube.is_none() {
            c.env("PIMESH_PROXY_MESH_DESTINATIONS", self.mesh_destinations(i));
            if let Some(s) = &pod.spec.service {
                c.env("PIMESH_PROXY_SERVICE", s);
            }
        }
        for k in PROXY_ENV {
            c.env_remove(k);
        }
        let name = format!("{}/proxy", pod.spec.name);
        let mut p = Proc::spawn(
            &name,
            c,
            &self.dir.join(format!("{}.proxy.log", pod.spec.name)),
        )?;
        let listening = p.wait_for_log("listening inbound=", READY_TIMEOUT);
        self.procs.push(p);
        listening.map_err(|log| self.not_ready(&format!("{name} did not start"), log))?;
        Ok(())
    }

    pub(super) fn wait_proxy_ready(&mut self, i: usize) -> Result<(), Error> {
        let pod = &self.pods[i];
        let admin = SocketAddr::from(([127, 0, 0, 1], PROXY_PORTS.2));
        let end = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = http_get(Some(&pod.netns), admin, "/ready", Duration::from_secs(2));
            if matches!(ready, Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > end {
                let log = self.proxy_log(&pod.spec.name);
                return Err(self.not_ready(
                    &format!(
                        "{}/proxy has no certificate after {READY_TIMEOUT:?}",
                        pod.spec.name
                    ),
                    log,
                ));
            }
            interrupt::sleep(Duration::from_millis(100))?;
        }
    }

    pub(super) fn start_app(&mut self, i: usize) -> Result<(), Error> {
        let pod = self.pods[i].clone();
        let Some(cmd) = &pod.spec.command else {
            return Ok(());
        };
        let mut c = command(Some(&pod.netns), self.opts.app_uid, "sh")?;
        c.args(["-c", cmd])
            .current_dir(pod.spec.cwd.as_ref().unwrap_or(&pod.dir))
            .env("POD_NAME", &pod.spec.name)
            .env("POD_IP", pod.ip.to_string())
            .env("PIMESH_LAB", &self.names.id);
        for (k, v) in self.service_env() {
            c.env(k, v);
        }
        for (k, v) in &pod.spec.env {
            c.env(k, v);
        }
        for k in PROXY_ENV {
            c.env_remove(k);
        }
        let name = format!("{}/app", pod.spec.name);
        let p = Proc::spawn(
            &name,
            c,
            &self.dir.join(format!("{}.app.log", pod.spec.name)),
        )?;
        self.procs.push(p);
        Ok(())
    }

    /// `<NAME>_SERVICE_HOST` / `<NAME>_SERVICE_PORT` of every pod with a
    /// port, as Kubernetes gives apps (name upper-cased, `-` → `_`).
    pub fn service_env(&self) -> Vec<(String, String)> {
        service_env(
            self.pods
                .iter()
                .filter_map(|p| Some((p.spec.name.as_str(), p.addr()?))),
        )
    }

    pub(super) fn wait_app_ready(&mut self, i: usize) -> Result<(), Error> {
        let pod = self.pods[i].clone();
        if pod.spec.command.is_none() {
            return Ok(());
        }
        let name = format!("{}/app", pod.spec.name);
        for port in &pod.spec.ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            let end = Instant::now() + READY_TIMEOUT;
            while connect_in(&pod.netns, addr, Duration::from_secs(1)).is_err() {
                let exited = self
                    .procs
                    .iter_mut()
                    .any(|p| p.name == name && !p.running());
                if exited || Instant::now() > end {
                    let log = self.app_log(&pod.spec.name);
                    return Err(self.not_ready(&format!("{name} does not listen on :{port}"), log));
                }
                interrupt::sleep(Duration::from_millis(100))?;
            }
        }
        Ok(())
    }
}
