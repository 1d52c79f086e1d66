//! The bench's world: one kcp, two clusters, `TMC_BENCH_WORKSPACES` bound workspaces with one
//! push-mode SyncTarget each (alternating between the clusters), one workspace placed on both
//! clusters, a floor workspace beside each that does not bind the export, and the manager.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kcp_tmc::kcp::{ClusterClients, LogicalClusterName, workspace};
use kcp_tmc::syncer::naming::target_key;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::audit::AuditLog;
use crate::{cluster, env};

/// When each ConfigMap name first appeared in each cluster (by cluster index).
pub type Arrivals = Arc<Mutex<HashMap<(usize, String), Instant>>>;

/// The Widget CRD both kcp-tmc (exported with `tmc install --workload-crd`, served by both
/// clusters) and the peer (published from the first cluster) sync: namespaced, a small spec, a status subresource (the agent
/// syncs status back, so this is the shape it is built for).
pub const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.bench.example.com}
spec:
  group: bench.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
              payload: {type: string}
          status:
            type: object
            properties:
              ready: {type: boolean}
"#;

/// What the bench's SyncTargets sync: the defaults and the Widgets.
const APIS: &str = "{group: apps, kind: Deployment}, {group: '', kind: Service}, {group: '', kind: ConfigMap}, \
                    {group: '', kind: Secret}, {group: bench.example.com, kind: Widget}";

/// The workspace whose namespace `load` is placed on both clusters.
pub const TWO: &str = "root:bench-two";

pub struct Bench {
    /// Kept alive for the whole run (dropping it stops kcp).
    pub kcp: env::Kcp,
    pub clusters: Vec<cluster::Cluster>,
    pub clients: ClusterClients,
    pub downstream: Vec<kube::Client>,
    /// The one-target workspaces; workspace `i` is placed on cluster `i % 2`.
    pub workspaces: Vec<String>,
    /// The logical cluster of each workspace, and a client of the export's virtual workspace:
    /// the path the syncer must write through.
    pub logical: Vec<LogicalClusterName>,
    pub virtual_workspace: ClusterClients,
    pub manager: env::ManagerProcess,
    pub arrivals: Arrivals,
    /// When each kcp-tmc write started, and when the virtual workspace's watch delivered it
    /// (see `delivery.rs`).
    pub written: crate::delivery::Moments,
    pub delivered: crate::delivery::Moments,
    /// kcp's audit log: who wrote what during the restart.
    pub audit: AuditLog,
}

pub fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"bench": "yes"}}, "data": {"payload": "x".repeat(200)}}),
    )
    .unwrap()
}

/// Records the first time each ConfigMap or Widget name appears in any namespace of cluster
/// `index` (the names of one run share a prefix no other run uses).
fn watch_arrivals(index: usize, client: kube::Client, arrivals: Arrivals) {
    let configmaps = Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<ConfigMap>(&()));
    let widgets = Api::<DynamicObject>::all_with(client, &widget_resource());
    // The peer's Widgets land in the first cluster too, under names kcp-tmc's runs also use: only
    // kcp-tmc's are recorded.
    for (api, labels) in [(configmaps, "bench=yes"), (widgets, "bench=yes,bench-writer=kcp-tmc")] {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(labels);
            let mut events = watcher(api, cfg).default_backoff().applied_objects().boxed();
            while let Some(Ok(obj)) = events.next().await {
                let name = obj.metadata.name.unwrap_or_default();
                arrivals.lock().unwrap().entry((index, name)).or_insert_with(Instant::now);
            }
        });
    }
}

/// The Widgets of the CRD above.
pub fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("bench.example.com", "v1", "Widget"), "widgets")
}

/// A Widget of the same size as [`cm`]'s ConfigMap, written for kcp-tmc.
pub fn widget(name: &str) -> DynamicObject {
    let labels = json!({"bench": "yes", "bench-writer": "kcp-tmc"});
    serde_json::from_value(json!({"apiVersion": "bench.example.com/v1", "kind": "Widget",
        "metadata": {"name": name, "labels": labels}, "spec": {"size": 1, "payload": "x".repeat(200)}}))
    .unwrap()
}

/// The unbound workspace beside bench workspace `ws` that holds the floor's ConfigMaps.
pub fn floor_workspace(ws: &str) -> String {
    format!("{ws}-floor")
}

/// Starts the manager of the bench (release build, like `make bench` builds it).
pub fn start_manager(kcp: &env::Kcp, log: &str) -> env::ManagerProcess {
    let kubeconfig = kcp.kubeconfig.display().to_string();
    // The bench's clusters run on this machine.
    env::Tmc::manager(&kubeconfig, "root:tmc", &["--cluster-address-allow", "127.0.0.1/32"], kcp.dir.path().join(log))
}

/// A bound workspace `ws` with one push-mode SyncTarget per cluster in `on`, its namespace
/// `load` assigned to all of them, an unassigned namespace `floor`, and the floor workspace.
async fn tenant(kcp: &env::Kcp, clients: &ClusterClients, ws: &str, on: &[&cluster::Cluster]) -> LogicalClusterName {
    let binding =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples/apibinding.yaml")).unwrap();
    let logical = workspace::ensure(clients, &ws.parse().unwrap(), Duration::from_secs(60)).await.unwrap();
    kcp.kubectl(ws, &["apply", "-f", "-"], Some(&binding)).unwrap();
    env::eventually("binding", Duration::from_secs(60), || async {
        Ok(kcp.kubectl(ws, &["get", "synctargets"], None).ok().map(|_| ()))
    })
    .await
    .unwrap();
    let mut labels = vec![];
    for (t, c) in on.iter().enumerate() {
        let name = format!("c{t}");
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "stringData": {"kubeconfig": c.kubeconfig_text()}});
        kcp.kubectl(ws, &["apply", "-f", "-"], Some(&secret.to_string())).unwrap();
        // The default APIs and the Widgets both clusters serve.
        let st = format!(
            "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {{name: {name}}}\nspec: {{kubeconfigSecretRef: {{namespace: default, name: {name}}}, supportedAPIs: [{APIS}]}}\n"
        );
        kcp.kubectl(ws, &["apply", "-f", "-"], Some(&st)).unwrap();
        labels.push(format!("state.tmc.kcp.io/{}: Sync", target_key(&logical, &name)));
    }
    let ns = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: load, labels: {{{}}}}}\n", labels.join(", "));
    kcp.kubectl(ws, &["apply", "-f", "-"], Some(&ns)).unwrap();
    kcp.kubectl(ws, &["create", "namespace", "floor"], None).unwrap();
    let floor_ws = floor_workspace(ws);
    workspace::ensure(clients, &floor_ws.parse().unwrap(), Duration::from_secs(60)).await.unwrap();
    kcp.kubectl(&floor_ws, &["create", "namespace", "floor"], None).unwrap();
    for t in 0..on.len() {
        kcp.kubectl(ws, &["wait", "--for=condition=Ready", &format!("synctarget/c{t}"), "--timeout=120s"], None)
            .unwrap();
    }
    logical
}

pub async fn setup(workspaces: usize) -> Bench {
    let clusters: Vec<_> = ["bench-1", "bench-2"]
        .into_iter()
        .map(|n| tokio::task::spawn_blocking(move || cluster::Cluster::start(n)))
        .collect();
    let audit = AuditLog::new();
    let kcp = env::Kcp::start_on(env::free_port(), &audit.flags()).await;
    let mut started = vec![];
    for c in clusters {
        started.push(c.await.unwrap().unwrap());
    }
    let kubeconfig = kcp.kubeconfig.display().to_string();
    // kcp-tmc exports the peer's Widget CRD beside the built-in APIs, and both clusters serve it.
    let crd = kcp.dir.path().join("widgets.yaml");
    std::fs::write(&crd, WIDGET_CRD).unwrap();
    for c in &started {
        c.kubectl_stdin(&["apply", "-f", "-"], WIDGET_CRD).unwrap();
        c.kubectl(&["wait", "--for=condition=Established", "crd/widgets.bench.example.com", "--timeout=60s"]).unwrap();
    }
    let crd = crd.display().to_string();
    let install = ["install", "--kubeconfig", &kubeconfig, "--workspace", "root:tmc", "--create-workspace"];
    let (code, out, err) = env::tmc(&[&install[..], &["--workload-crd", &crd]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let manager = start_manager(&kcp, "manager.log");
    let clients = kcp.clients().await;
    let mut names = vec![];
    let mut logical = vec![];
    for i in 0..workspaces {
        let ws = format!("root:bench-{i}");
        logical.push(tenant(&kcp, &clients, &ws, &[&started[i % 2]]).await);
        eprintln!("bench: set up {ws}");
        names.push(ws);
    }
    tenant(&kcp, &clients, TWO, &[&started[0], &started[1]]).await;
    let mut downstream = vec![];
    for c in &started {
        let client = c.client().await;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "floor"}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        downstream.push(client);
    }
    let slices: Api<kube::api::DynamicObject> =
        Api::all_with(clients.path(&"root:tmc".parse().unwrap()), &kcp_tmc::kcp::endpoints::endpoint_slice_resource());
    let slice = slices.get("tmc.kcp.io").await.unwrap();
    let urls = kcp_tmc::kcp::endpoints::endpoint_urls(&serde_json::to_value(slice).unwrap());
    let url = urls.keys().next().expect("the export has a virtual-workspace URL");
    let virtual_workspace = ClusterClients::new(&kcp.config().await, url).unwrap();
    let arrivals: Arrivals = Default::default();
    for (i, c) in downstream.iter().enumerate() {
        watch_arrivals(i, c.clone(), arrivals.clone());
    }
    let delivered = crate::delivery::watch(&virtual_workspace);
    Bench {
        kcp,
        clusters: started,
        clients,
        downstream,
        workspaces: names,
        logical,
        virtual_workspace,
        manager,
        arrivals,
        written: Default::default(),
        delivered,
        audit,
    }
}

impl Bench {
    /// ConfigMaps in namespace `ns` of workspace `ws`; the floor's ConfigMaps live in a workspace
    /// of their own that does not bind the export, so the manager neither caches nor sees them
    /// (the floor must not load the system it is the baseline for).
    pub fn kcp_api(&self, ws: &str, ns: &str) -> Api<ConfigMap> {
        let ws = if ns == "floor" { floor_workspace(ws) } else { ws.to_string() };
        Api::namespaced(self.clients.path(&ws.parse().unwrap()), ns)
    }

    /// ConfigMaps in the floor namespace of cluster `c`.
    pub fn floor_api(&self, c: usize) -> Api<ConfigMap> {
        Api::namespaced(self.downstream[c].clone(), "floor")
    }

    /// When `name` arrived in every cluster of `clusters`: the last of those moments.
    pub fn arrived(&self, name: &str, clusters: &[usize]) -> Option<Instant> {
        let arrivals = self.arrivals.lock().unwrap();
        clusters
            .iter()
            .map(|c| arrivals.get(&(*c, name.to_string())).copied())
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    /// Waits (up to `limit`) until `name` arrived in every cluster of `clusters`. Polled every
    /// 5 ms: the moment itself comes from the watch, the poll only paces the next sample.
    pub async fn wait_arrived(&self, name: &str, clusters: &[usize], limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.arrived(name, clusters) {
                return at;
            }
            assert!(Instant::now() < deadline, "{name} did not arrive in clusters {clusters:?} within {limit:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn manager_pid(&self) -> u32 {
        self.manager.process.pid()
    }
}
