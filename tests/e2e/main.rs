//! End-to-end tests against a real kcp server.
//!
//! One kcp and three physical clusters are started for the whole run (start-up costs tens of
//! seconds), kcp-tmc's APIs are
//! installed with `tmc install` into `root:tmc`, a `tmc manager` process runs against it, and two
//! tenant workspaces bind the export with the sample APIBinding from `config/samples/`. Tests
//! then run concurrently, each with its own objects. A custom runner (harness = false) owns that
//! shared set-up and its teardown, and ends with the line `N passed, N failed`.
//!
//! `cargo test --test e2e -- <substring>` runs the tests whose names contain the substring.

mod apis;
mod cli;
mod cluster;
mod conflicts;
mod deploy;
mod divide;
mod env;
mod hostile;
mod install;
mod kinds;
mod leader;
mod lifecycle;
mod moves;
mod ops;
mod overrides;
mod placement;
mod preview;
mod prometheus;
mod rbac;
mod relist;
mod restart;
mod sharded;
mod status;
mod stranded;
mod syncer;
mod synctarget;
mod unguarded;
mod upsync;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use env::{Kcp, TestResult, Tmc, eventually};
use kcp_tmc::kcp::ClusterClients;

/// Heartbeat threshold the shared manager runs with: short so tests can watch it expire, long
/// enough that a reconcile delayed by thirty-odd concurrent tests on two cores still lands
/// inside it (8 s was seen to be too tight).
pub const HEARTBEAT_THRESHOLD: Duration = Duration::from_secs(15);
pub const PROVIDER: &str = "root:tmc";
pub const TENANT_A: &str = "root:tenant-a";
pub const TENANT_B: &str = "root:tenant-b";
/// A custom workload API exported next to the built-in ones (see `apis.rs`).
pub const WIDGET_CRD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/fixtures/widgets.yaml");

pub struct World {
    pub kcp: Kcp,
    /// Three physical clusters (real kube-apiservers with kwok nodes). The third belongs to the
    /// test that counts a cluster's write requests.
    pub clusters: Vec<cluster::Cluster>,
    pub clients: ClusterClients,
    pub manager: std::sync::Mutex<Tmc>,
    /// Base URLs of the shared manager's metrics and health addresses, e.g. `http://127.0.0.1:4321`.
    pub manager_metrics: String,
    pub manager_health: String,
}

impl World {
    /// A manager of a test's own on the export of `provider`, beside the shared one: heartbeats
    /// every 2 s, loopback clusters allowed; its log is `<log>.log` in kcp's directory.
    pub fn own_manager(&self, provider: &str, log: &str) -> Tmc {
        let kubeconfig = self.kcp.kubeconfig.display().to_string();
        let log = self.kcp.dir.path().join(format!("{log}.log"));
        let args = ["--syncer-heartbeat-interval", "2s", "--cluster-address-allow", "127.0.0.1/32"];
        Tmc::manager(&kubeconfig, provider, &args, log).process
    }

    /// Creates the workspace `tenant`, binds the export of the provider workspace `provider` in
    /// it (accepting every claim) and waits until its APIs are served.
    pub async fn bind_tenant(&self, tenant: &str, provider: &str, timeout: Duration) -> Result<(), String> {
        let path = tenant.parse().map_err(|e| format!("{e}"))?;
        kcp_tmc::kcp::workspace::ensure(&self.clients, &path, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        let export = kcp_tmc::kcp::export::DEFAULT_EXPORT_NAME;
        let binding =
            serde_json::to_string(&kcp_tmc::kcp::export::api_binding(provider, export)).map_err(|e| e.to_string())?;
        self.kcp.kubectl(tenant, &["apply", "-f", "-"], Some(&binding))?;
        eventually("synctargets served in the tenant", timeout, || async {
            Ok(self.kcp.kubectl(tenant, &["get", "synctargets"], None).ok().map(|_| ()))
        })
        .await
    }
}

type TestFn = fn(Arc<World>) -> Pin<Box<dyn Future<Output = TestResult> + Send>>;

macro_rules! tests {
    ($($path:path),* $(,)?) => {
        vec![$((stringify!($path), (|w| Box::pin($path(w))) as TestFn)),*]
    };
}

/// Tests that run alone, after the concurrent ones, with a longer limit: each runs a manager of
/// its own and loads kcp or the machine so much (600 MiB of Secrets, a 4 GiB answer, trace
/// logging) that concurrent tests would time out, and their figures (peak RSS) would be
/// disturbed by everyone else's work.
fn serial_tests() -> Vec<(&'static str, TestFn)> {
    tests![
        hostile::memory::unplaced_secrets_do_not_grow_the_manager,
        hostile::address::huge_answer_is_cut_off,
        hostile::secrets::secret_material_never_reaches_logs_events_conditions_or_metrics,
        // Their managers sweep every bound workspace: alone, the release is the new manager's.
        stranded::finalizers_of_targets_gone_while_down_are_released_at_start,
        stranded::deletion_times_out_when_the_targets_syncer_cannot_run,
        restart::restart_with_unrelated_objects_deletes_nothing,
    ]
}

/// The sharded-kcp test: kcp's fixed ports, so one at a time, after the serial ones.
fn sharded_tests() -> Vec<(&'static str, TestFn)> {
    tests![sharded::manager_follows_both_shards_of_a_sharded_kcp]
}

/// The limit of one concurrent test.
const CONCURRENT_LIMIT: Duration = Duration::from_secs(240);

/// The limit of one serial test.
const SERIAL_TIMEOUT: Duration = Duration::from_secs(600);

fn all_tests() -> Vec<(&'static str, TestFn)> {
    tests![
        install::install_is_idempotent,
        install::endpoint_follows_bindings_and_schema_upgrades,
        install::crds_command_prints_both_crds,
        synctarget::pull_mode_target_waits_for_syncer,
        synctarget::same_name_in_two_workspaces_reconciled_independently,
        synctarget::heartbeat_flips_and_recovers,
        synctarget::bad_kubeconfig_secrets_are_named,
        synctarget::invalid_spec_is_reported_and_others_proceed,
        synctarget::cordon_and_eviction_are_visible,
        synctarget::observed_generation_follows_spec,
        synctarget::settled_status_is_not_rewritten,
        cli::manager_waits_for_unreachable_kcp,
        cli::invalid_input_says_what_to_fix,
        ops::manager_serves_metrics_and_health,
        ops::prometheus_scrapes_the_manager,
        ops::syncer_and_controllers_record_metrics,
        leader::one_leader_reconciles_and_hands_over,
        syncer::workloads_run_on_the_cluster_and_status_comes_back,
        syncer::same_names_in_two_workspaces_do_not_collide_downstream,
        syncer::drift_is_reverted,
        syncer::nothing_is_written_when_nothing_changed,
        syncer::deletion_and_unassignment_clean_up_downstream,
        syncer::foreign_objects_are_not_taken_over_without_consent,
        syncer::rejected_objects_are_reported_and_do_not_block_others,
        syncer::status_is_aggregated_across_two_clusters,
        syncer::wrong_credentials_are_named,
        syncer::unreachable_cluster_does_not_block_deletion,
        syncer::pull_mode_syncer_runs_beside_the_cluster,
        syncer::syncer_manifest_is_accepted_by_a_real_cluster,
        deploy::chart_lints_renders_the_shipped_manager_and_is_accepted_by_a_real_cluster,
        syncer::autoscaled_replicas_are_not_fought,
        apis::custom_apis_sync_where_both_sides_serve_them,
        conflicts::foreign_downstream_namespace_is_reported_not_overwritten,
        conflicts::objects_too_large_for_the_cluster_are_reported,
        relist::copy_deleted_while_the_api_server_was_down_is_restored,
        unguarded::copies_without_a_finalizer_are_cleaned_up_after_a_kill,
        placement::placement_selects_a_labelled_subset_and_deletion_cleans_up,
        placement::placement_is_sticky_and_respects_cordon_and_drain,
        placement::placement_across_workspaces_needs_consent,
        placement::placement_fails_over_from_an_unreachable_cluster,
        placement::workload_selector_limits_what_is_synced,
        placement::placement_needs_targets_that_sync_the_namespaces_kinds,
        preview::placement_preview_says_what_the_manager_then_does,
        divide::divided_replicas_add_up_and_follow_scale_weights_and_outages,
        kinds::status_of_more_kinds_adds_up_across_clusters,
        overrides::overrides_change_copies_per_target_and_a_bad_one_holds_them,
        upsync::operator_objects_come_back_to_kcp_and_never_go_down_again,
        moves::placement_move_waits_for_evidence_and_a_refusing_target_keeps_the_workload,
        lifecycle::deleting_a_synctarget_releases_its_objects,
        rbac::manager_runs_with_the_shipped_kcp_rbac,
        rbac::pull_mode_syncer_runs_with_exactly_the_manifest_rbac,
        hostile::rbac::stolen_syncer_token_stays_in_its_namespaces,
        status::status_shows_targets_placements_and_failed_objects,
        hostile::kubeconfig::exec_plugin_is_refused_and_never_runs,
        hostile::kubeconfig::auth_provider_is_refused_and_never_runs,
        hostile::kubeconfig::token_file_is_refused_and_nothing_is_sent,
        hostile::kubeconfig::file_paths_are_refused_and_inline_data_recovers,
        hostile::kubeconfig::proxy_url_is_refused_and_never_dialled,
        hostile::kubeconfig::insecure_skip_tls_verify_is_refused_without_the_flag,
        hostile::placement::invalid_selectors_are_refused_at_admission,
        hostile::placement::invalid_selector_past_admission_keeps_what_was_placed,
        hostile::placement::cross_workspace_probes_all_read_not_allowed,
        hostile::address::loopback_server_is_refused,
        hostile::address::metadata_service_is_refused,
        hostile::address::unspecified_address_is_refused,
        hostile::address::kcp_itself_is_refused_though_its_range_is_allowed,
        hostile::address::non_kubernetes_answer_is_described_not_quoted,
        hostile::time::times_from_year_9999_neither_crash_nor_count_as_fresh,
        hostile::forgery::precreated_downstream_namespace_receives_nothing,
        hostile::forgery::forged_status_annotations_do_not_drive_status,
        hostile::forgery::forged_workload_selectors_fail_closed,
        hostile::forgery::forged_assignment_to_another_workspace_gets_nothing,
    ]
}

async fn setup() -> Result<World, String> {
    let clusters: Vec<_> = ["cluster-1", "cluster-2", "cluster-3"]
        .into_iter()
        .map(|name| tokio::task::spawn_blocking(move || cluster::Cluster::start(name)))
        .collect();
    let kcp = Kcp::start().await;
    let mut started = vec![];
    for c in clusters {
        started.push(c.await.map_err(|e| e.to_string())??);
    }
    let clusters = started;
    let kubeconfig = kcp.kubeconfig.display().to_string();
    let (code, out, err) = env::tmc(&[
        "install",
        "--kubeconfig",
        &kubeconfig,
        "--workspace",
        PROVIDER,
        "--create-workspace",
        "--workload-crd",
        WIDGET_CRD,
    ]);
    if code != 0 {
        return Err(format!("tmc install failed ({code}): {out}{err}"));
    }
    // The manager starts before any workspace binds the export: it must pick up the
    // virtual-workspace endpoint when it appears.
    let threshold = format!("{}s", HEARTBEAT_THRESHOLD.as_secs());
    let env::ManagerProcess { process: manager, metrics: metrics_addr, health: health_addr } = Tmc::manager(
        &kubeconfig,
        PROVIDER,
        &[
            "--heartbeat-threshold",
            &threshold,
            "--syncer-heartbeat-interval",
            "1s",
            "--syncer-deletion-timeout",
            "3s",
            "--placement-failover-grace",
            "10s",
            // Short, so the stalled-move test sees MoveStalled soon (see tests/e2e/moves.rs).
            "--placement-move-timeout",
            "15s",
            // The suite's clusters run on this machine; nothing else on loopback is allowed.
            "--cluster-address-allow",
            "127.0.0.1/32",
        ],
        kcp.dir.path().join("manager.log"),
    );
    let clients = kcp.clients().await;
    let binding =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples/apibinding.yaml")).unwrap();
    for tenant in [TENANT_A, TENANT_B] {
        kcp_tmc::kcp::workspace::ensure(&clients, &tenant.parse().unwrap(), Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        kcp.kubectl(tenant, &["apply", "-f", "-"], Some(&binding))?;
    }
    for tenant in [TENANT_A, TENANT_B] {
        eventually(&format!("synctargets served in {tenant}"), Duration::from_secs(60), || async {
            Ok(kcp.kubectl(tenant, &["get", "synctargets"], None).ok().map(|_| ()))
        })
        .await?;
    }
    Ok(World {
        kcp,
        clusters,
        clients,
        manager: std::sync::Mutex::new(manager),
        manager_metrics: format!("http://{metrics_addr}"),
        manager_health: format!("http://{health_addr}"),
    })
}

/// How many tests run at once: `TMC_E2E_JOBS`, else 16. Most tests spend their time polling, so
/// many can share two cores, but every one also spawns kubectl and adds objects for the servers
/// and the shared manager to process; an unbounded run starves them and times tests out.
fn concurrency() -> usize {
    std::env::var("TMC_E2E_JOBS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(16)
}

fn main() -> std::process::ExitCode {
    // Every argument not starting with '-' is a substring; a test runs if it matches any.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let selected = |(n, _): &(&str, TestFn)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str()));
    let tests: Vec<_> = all_tests().into_iter().filter(selected).collect();
    let serial: Vec<_> = serial_tests().into_iter().chain(sharded_tests()).filter(selected).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let started = Instant::now();
        println!(
            "running {} e2e tests against a real kcp ({} of them alone at the end)",
            tests.len() + serial.len(),
            serial.len()
        );
        let world = match setup().await {
            Ok(w) => Arc::new(w),
            Err(e) => {
                println!("e2e set-up failed: {e}");
                println!("0 passed, {} failed", tests.len() + serial.len());
                return std::process::ExitCode::FAILURE;
            }
        };
        println!("set-up done in {:?}; running {} at a time", started.elapsed(), concurrency());
        let mut set = tokio::task::JoinSet::new();
        let jobs = Arc::new(tokio::sync::Semaphore::new(concurrency()));
        for (name, f) in tests {
            let (w, jobs) = (world.clone(), jobs.clone());
            set.spawn(async move {
                // Each test's limit starts when it gets a slot, not while it waits for one. 240 s:
                // the schema-upgrade test's own waits add up to over 150 s, and it took 123–157 s
                // with the suite beside other heavy runs on two cores; the limit only bounds how
                // long a hung test takes to be reported.
                let _slot = jobs.acquire_owned().await.expect("the semaphore is never closed");
                let t = Instant::now();
                let result = tokio::time::timeout(CONCURRENT_LIMIT, f(w)).await;
                let result = result.unwrap_or_else(|_| Err(format!("timed out after {CONCURRENT_LIMIT:?}").into()));
                (name, t.elapsed(), result)
            });
        }
        let (mut passed, mut failed) = (0, 0);
        // Repeated at the very end: CI keeps only the tail of the output.
        let mut failures: Vec<String> = Vec::new();
        let mut serial = serial.into_iter();
        loop {
            let joined = match set.join_next().await {
                Some(joined) => joined,
                // The concurrent tests are done: the serial ones run one at a time.
                None => match serial.next() {
                    Some((name, f)) => {
                        let w = world.clone();
                        set.spawn(async move {
                            let t = Instant::now();
                            let result = tokio::time::timeout(SERIAL_TIMEOUT, f(w)).await;
                            let result =
                                result.unwrap_or_else(|_| Err(format!("timed out after {SERIAL_TIMEOUT:?}").into()));
                            (name, t.elapsed(), result)
                        });
                        continue;
                    }
                    None => break,
                },
            };
            match joined {
                Ok((name, took, Ok(()))) => {
                    passed += 1;
                    println!("test {name} ... ok ({took:.1?})");
                }
                Ok((name, took, Err(e))) => {
                    failed += 1;
                    println!("test {name} ... FAILED ({took:.1?})\n    {e}");
                    failures.push(format!("{name}: {e}"));
                }
                Err(e) => {
                    failed += 1;
                    println!("test panicked: {e}");
                    failures.push(format!("panicked: {e}"));
                }
            }
        }
        if failed > 0 {
            let log = world.manager.lock().unwrap().output();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            println!("--- last lines of the manager log ---");
            tail.iter().rev().for_each(|l| println!("{l}"));
            println!(
                "--- set TMC_E2E_KEEP=1 to keep the kcp and manager logs under {} ---",
                world.kcp.dir.path().display()
            );
        }
        println!("e2e finished in {:?}", started.elapsed());
        failures.iter().for_each(|f| println!("FAILED {f}"));
        println!("{passed} passed, {failed} failed");
        drop(world);
        if failed == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
    })
}
