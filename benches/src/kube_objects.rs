//! The Kubernetes objects of `pimesh-kube-bench`'s scenarios, as
//! multi-document YAML for `kubectl create -f`: per deployment `app-I` a
//! ServiceAccount, a ReplicaSet `app-I-HASH` (0 replicas, a selector no pod
//! matches: it only has to exist, or the garbage collector deletes the pods
//! that name it as owner), a selector-less Service `app-I` (port `http` 80
//! → 8080), its meshed Pods and the EndpointSlices naming them (at most
//! 100 endpoints per slice, as kube-controller-manager cuts them).

use std::collections::HashMap;
use std::fmt::Write as _;

/// Endpoints per EndpointSlice (kube-controller-manager's
/// `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// `endpointslice.kubernetes.io/managed-by` of the bench's slices.
pub const MANAGED_BY: &str = "pimesh-bench";
/// The label that marks a pod meshed (Linkerd's `linkerd.io/control-plane-ns`).
pub const MESHED_LABEL: &str = "pimesh.io/control-plane-ns";
/// The controller's namespace: the meshed pods' [`MESHED_LABEL`].
pub const CONTROL_PLANE_NS: &str = "pimesh";

/// One scenario's shape: `services` deployments (one Service each) of
/// `pods_per_service` pods, one endpoint per pod.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name (`A`, `B`): the report's key.
    pub name: &'static str,
    /// Namespace of every object (created with them).
    pub namespace: String,
    /// Services, deployments and ServiceAccounts.
    pub services: usize,
    /// Pods (= endpoints) per service.
    pub pods_per_service: usize,
    /// Second octet of the pods' addresses (`10.NET.x.y`), distinct per
    /// scenario so two scenarios never share an address.
    pub net: u8,
}

impl Scenario {
    /// Pods, and endpoints (one Service port, one endpoint per pod).
    pub fn pods(&self) -> usize {
        self.services * self.pods_per_service
    }

    /// EndpointSlices.
    pub fn slices(&self) -> usize {
        self.services * self.pods_per_service.div_ceil(MAX_ENDPOINTS_PER_SLICE)
    }

    /// Every object created: namespace, ServiceAccounts, ReplicaSets,
    /// Services, Pods, EndpointSlices.
    pub fn objects(&self) -> usize {
        1 + 3 * self.services + self.pods() + self.slices()
    }

    /// Deployment `i`'s name.
    pub fn deployment(&self, i: usize) -> String {
        format!("app-{i}")
    }

    /// Deployment `i`'s `pod-template-hash` (lower-case hex: a valid label
    /// value and name suffix).
    pub fn template_hash(&self, i: usize) -> String {
        format!(
            "{:09x}",
            0x5_d8f7_c9b4_u64 ^ (i as u64).wrapping_mul(0x9e37_79b9)
        )
    }

    /// The ReplicaSet of deployment `i`: `app-I-HASH`.
    pub fn replicaset(&self, i: usize) -> String {
        format!("{}-{}", self.deployment(i), self.template_hash(i))
    }

    /// Pod `j` of deployment `i`.
    pub fn pod(&self, i: usize, j: usize) -> String {
        format!("{}-p{j:04}", self.replicaset(i))
    }

    /// Pod `j` of deployment `i`'s address: `10.NET.x.y`, y in 1..=250.
    pub fn pod_ip(&self, i: usize, j: usize) -> String {
        let k = i * self.pods_per_service + j;
        format!("10.{}.{}.{}", self.net, k / 250, k % 250 + 1)
    }

    /// The namespace, ServiceAccounts, ReplicaSets and Services.
    pub fn base_yaml(&self) -> String {
        let ns = &self.namespace;
        let mut docs = vec![format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
        )];
        for i in 0..self.services {
            let d = self.deployment(i);
            docs.push(format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {d}\n  namespace: {ns}\n"
            ));
            docs.push(format!(
                "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: {rs}\n  namespace: {ns}\n\
                 spec:\n  replicas: 0\n  selector:\n    matchLabels:\n      pimesh-bench/never: \"true\"\n\
                 \x20 template:\n    metadata:\n      labels:\n        pimesh-bench/never: \"true\"\n\
                 \x20   spec:\n      containers:\n      - name: app\n        image: app\n",
                rs = self.replicaset(i)
            ));
            docs.push(format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {d}\n  namespace: {ns}\n\
                 spec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n    protocol: TCP\n"
            ));
        }
        docs.join("---\n")
    }

    /// The pods, in documents of at most `per_file` pods each. `uids` maps
    /// ReplicaSet names to their uids: each pod names its ReplicaSet as
    /// owner with `controller: false`, because the ReplicaSet controller
    /// releases (removes the reference from) a pod it controls but its
    /// selector does not match; the pimesh controller takes the first
    /// owner when none is the controller.
    ///
    /// # Errors
    ///
    /// The ReplicaSet whose uid is missing.
    pub fn pods_yaml(
        &self,
        uids: &HashMap<String, String>,
        per_file: usize,
    ) -> Result<Vec<String>, String> {
        let ns = &self.namespace;
        let mut files = Vec::new();
        let mut cur = String::new();
        let mut n = 0;
        for i in 0..self.services {
            let (d, rs, hash) = (
                self.deployment(i),
                self.replicaset(i),
                self.template_hash(i),
            );
            let uid = uids.get(&rs).ok_or_else(|| format!("no uid for {rs}"))?;
            for j in 0..self.pods_per_service {
                if n == per_file.max(1) {
                    files.push(std::mem::take(&mut cur));
                    n = 0;
                }
                if n > 0 {
                    cur.push_str("---\n");
                }
                let _ = write!(
                    cur,
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {ns}\n\
                     \x20 labels:\n    app: {d}\n    pod-template-hash: \"{hash}\"\n    {MESHED_LABEL}: {CONTROL_PLANE_NS}\n\
                     \x20 ownerReferences:\n  - apiVersion: apps/v1\n    kind: ReplicaSet\n    name: {rs}\n    uid: {uid}\n    controller: false\n\
                     spec:\n  serviceAccountName: {d}\n  containers:\n  - name: app\n    image: app\n    ports:\n    - containerPort: 8080\n",
                    pod = self.pod(i, j),
                );
                n += 1;
            }
        }
        if !cur.is_empty() {
            files.push(cur);
        }
        Ok(files)
    }

    /// The EndpointSlices: per service, its pods in slices of at most
    /// [`MAX_ENDPOINTS_PER_SLICE`], each endpoint ready and naming its pod.
    pub fn slices_yaml(&self) -> String {
        let ns = &self.namespace;
        let mut docs = Vec::new();
        for i in 0..self.services {
            let d = self.deployment(i);
            let pods: Vec<usize> = (0..self.pods_per_service).collect();
            for (n, chunk) in pods.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
                let mut doc = format!(
                    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {d}-{n}\n  namespace: {ns}\n\
                     \x20 labels:\n    kubernetes.io/service-name: {d}\n    endpointslice.kubernetes.io/managed-by: {MANAGED_BY}\n\
                     addressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n"
                );
                for &j in chunk {
                    let _ = write!(
                        doc,
                        "- addresses: [\"{ip}\"]\n  conditions:\n    ready: true\n  targetRef:\n    kind: Pod\n    name: {pod}\n    namespace: {ns}\n",
                        ip = self.pod_ip(i, j),
                        pod = self.pod(i, j),
                    );
                }
                docs.push(doc);
            }
        }
        docs.join("---\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(services: usize, pods: usize) -> Scenario {
        Scenario {
            name: "T",
            namespace: "bench-t".into(),
            services,
            pods_per_service: pods,
            net: 244,
        }
    }

    fn uids(s: &Scenario) -> HashMap<String, String> {
        (0..s.services)
            .map(|i| (s.replicaset(i), format!("uid-{i}")))
            .collect()
    }

    #[test]
    fn counts_and_slices_of_at_most_100() {
        let s = scenario(50, 100);
        assert_eq!((s.pods(), s.slices()), (5000, 50));
        let s = scenario(2, 250);
        assert_eq!(s.slices(), 6);
        let yaml = s.slices_yaml();
        assert_eq!(yaml.matches("kind: EndpointSlice").count(), 6);
        let per_slice: Vec<usize> = yaml
            .split("---\n")
            .map(|d| d.matches("- addresses:").count())
            .collect();
        assert_eq!(per_slice, [100, 100, 50, 100, 100, 50]);
        assert_eq!(s.objects(), 1 + 6 + 500 + 6);
    }

    #[test]
    fn pods_name_their_replicaset_and_are_meshed() {
        let s = scenario(3, 5);
        let files = s.pods_yaml(&uids(&s), 4).unwrap();
        assert_eq!(files.len(), 4);
        let all = files.join("---\n");
        assert_eq!(all.matches("kind: Pod\n").count(), 15);
        assert_eq!(
            all.matches("pimesh.io/control-plane-ns: pimesh").count(),
            15
        );
        let rs = s.replicaset(1);
        assert!(rs.starts_with("app-1-"));
        assert!(all.contains(&format!("name: {rs}\n    uid: uid-1\n")));
        assert!(all.contains(&format!(
            "pod-template-hash: \"{}\"",
            rs.strip_prefix("app-1-").unwrap()
        )));
        assert!(s.pods_yaml(&HashMap::new(), 4).is_err());
    }

    #[test]
    fn addresses_are_distinct() {
        let s = scenario(50, 100);
        let mut ips: Vec<String> = (0..50)
            .flat_map(|i| (0..100).map(move |j| (i, j)))
            .map(|(i, j)| s.pod_ip(i, j))
            .collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 5000);
        assert_eq!(s.pod_ip(49, 99), "10.244.19.250");
    }
}
