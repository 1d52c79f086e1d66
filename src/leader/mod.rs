//! Leader election through a `coordination.k8s.io/v1` Lease in the APIExport's workspace, so
//! that of several `tmc manager` replicas exactly one runs the controllers and the others stand
//! by. kcp serves Leases natively in every workspace.
//!
//! Built on a plain `Api<Lease>` with optimistic concurrency: every write is a replace carrying
//! the resourceVersion that was read, so of two replicas racing for a free lease one gets a 409
//! and stays standby. What to write is decided in [`decide`], which has no I/O.
//!
//! A leader that cannot renew within the renew deadline cancels its controllers and returns
//! [`LeaderError::Lost`]; the process then exits non-zero and its restart comes back as a
//! standby. Exiting (rather than returning to standby in-process) is what guarantees that no
//! task of the old term — the push-mode syncers are spawned tasks — writes on after the loss.

pub mod decide;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

use crate::kcp::error_message;
use crate::server::Readiness;
use decide::{Decision, LostReason, Seen};

/// The namespace of the Lease in the export workspace. kcp creates `default` in every
/// workspace; it is created here if missing.
pub const NAMESPACE: &str = "default";

/// How the election runs (`--leader-election-*`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub lease_name: String,
    /// Written as the Lease's holderIdentity; unique per process (hostname and pid by default).
    pub identity: String,
    /// How long a lease lives without renewal before a standby may take it.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops its controllers.
    pub renew_deadline: Duration,
    /// How often a standby looks at the lease and the leader renews it.
    pub retry_period: Duration,
}

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "lost the leader-election lease {lease}: {reason}; exiting so that two replicas never write at once (restarted, this replica stands by)"
    )]
    Lost { lease: String, reason: LostReason },
}

/// The result of one read-decide-write round.
#[derive(Debug)]
enum Outcome {
    Leading,
    Standby {
        holder: String,
        expires_in: Duration,
    },
    /// Someone else wrote the Lease between our read and our write: look again.
    Conflict,
    Lost(LostReason),
}

struct Lock {
    api: Api<Lease>,
    namespaces: Api<Namespace>,
    settings: Settings,
    /// The Lease's resourceVersion as last seen, and when it was first seen (our clock).
    observed: Option<(String, Instant)>,
    /// When our last successful write started; `Some` while leading.
    renewed: Option<Instant>,
    /// The Lease as we last wrote it, for the release.
    written: Option<Lease>,
}

/// Waits to lead, then runs `lead` with a token that is cancelled when `cancel` fires or the
/// lease is lost. On `cancel` the controllers finish (the lease is renewed meanwhile) and the
/// lease is released, so a standby takes over at once. `client` is scoped to the workspace
/// that holds the Lease.
pub async fn run<F, Fut, E>(
    client: kube::Client,
    settings: Settings,
    readiness: &Readiness,
    cancel: CancellationToken,
    lead: F,
) -> Result<(), E>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: From<LeaderError>,
{
    let mut lock = Lock {
        api: Api::namespaced(client.clone(), NAMESPACE),
        namespaces: Api::all(client),
        settings,
        observed: None,
        renewed: None,
        written: None,
    };
    if !lock.wait_to_lead(readiness, &cancel).await {
        return Ok(());
    }
    let name = lock.settings.lease_name.clone();
    tracing::info!(lease = %name, identity = %lock.settings.identity, "became the leader; starting the controllers");
    readiness.set_waiting_for("the controllers to start (this replica just became the leader)");
    let stop = CancellationToken::new();
    let mut controllers = Box::pin(lead(stop.clone()));
    let mut renewing = Box::pin(lock.keep_renewing());
    let mut stopping = false;
    let ended = loop {
        tokio::select! {
            result = &mut controllers => break Ok(result),
            reason = &mut renewing => break Err(reason),
            _ = cancel.cancelled(), if !stopping => {
                // The lease is kept (and renewed) until the controllers have finished their
                // in-flight writes; only then may a standby start.
                tracing::info!(lease = %name, "stopping the controllers before releasing the lease");
                stopping = true;
                stop.cancel();
            }
        }
    };
    drop(renewing);
    stop.cancel();
    match ended {
        Ok(result) => {
            lock.release().await;
            result
        }
        Err(reason) => {
            tracing::error!(lease = %name, %reason, "lost leadership: stopping the controllers at once");
            readiness.set_waiting_for(format!("nothing: leadership of lease {name} was lost ({reason})"));
            // Controllers get the time before another replica may take over to finish.
            let grace = lock.settings.lease_duration.saturating_sub(lock.settings.renew_deadline);
            let _ = timeout(grace, controllers).await;
            Err(LeaderError::Lost { lease: name, reason }.into())
        }
    }
}

impl Lock {
    /// Stands by until this replica holds the lease (`true`) or `cancel` fires (`false`).
    async fn wait_to_lead(&mut self, readiness: &Readiness, cancel: &CancellationToken) -> bool {
        let name = self.settings.lease_name.clone();
        let mut last_holder = None;
        loop {
            match timeout(self.settings.renew_deadline, self.round()).await {
                Ok(Ok(Outcome::Leading)) => return true,
                Ok(Ok(Outcome::Standby { holder, expires_in })) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %name, %holder, ?expires_in, "standby: waiting to lead");
                        last_holder = Some(holder.clone());
                    }
                    // Ready as a standby: see "Leader election" in docs/architecture.md.
                    readiness.set_ready_as(format!("standby, waiting to lead (lease {name} is held by {holder})"));
                }
                Ok(Ok(Outcome::Conflict | Outcome::Lost(_))) => {}
                Ok(Err(e)) => {
                    tracing::warn!(lease = %name, error = %error_message(&e), "cannot read or write the leader-election lease");
                    readiness.set_waiting_for(format!("the leader-election lease {name}: {}", error_message(&e)));
                }
                Err(_) => readiness.set_waiting_for(format!("the leader-election lease {name}: kcp did not answer")),
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = sleep(self.settings.retry_period) => {}
            }
        }
    }

    /// Renews every retry period; returns why leadership ended.
    async fn keep_renewing(&mut self) -> LostReason {
        loop {
            sleep(self.settings.retry_period).await;
            let since = self.since_renewed();
            // Never wait on kcp past the renew deadline.
            let budget = self.settings.renew_deadline.saturating_sub(since);
            match timeout(budget, self.round()).await {
                Ok(Ok(Outcome::Lost(reason))) => return reason,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %error_message(&e), "cannot renew the leader-election lease; retrying")
                }
                Err(_) => tracing::warn!("renewing the leader-election lease timed out"),
            }
            if decide::overdue(self.since_renewed(), self.settings.renew_deadline) {
                return LostReason::RenewDeadline;
            }
        }
    }

    fn since_renewed(&self) -> Duration {
        self.renewed.map(|t| t.elapsed()).unwrap_or(Duration::MAX)
    }

    /// Reads the Lease, decides, and writes what the decision says.
    async fn round(&mut self) -> Result<Outcome, kube::Error> {
        let name = self.settings.lease_name.clone();
        let current = self.api.get_opt(&name).await?;
        let now = Instant::now();
        let rv = current.as_ref().and_then(|l| l.metadata.resource_version.clone());
        self.observed = match (rv, self.observed.take()) {
            (Some(rv), Some((seen, at))) if rv == seen => Some((seen, at)),
            (Some(rv), _) => Some((rv, now)),
            (None, _) => None,
        };
        let spec = current.as_ref().and_then(|l| l.spec.clone()).unwrap_or_default();
        let seen = current.as_ref().map(|_| Seen {
            holder: spec.holder_identity.as_deref().unwrap_or_default(),
            duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or_default().max(0) as u64),
            unchanged_for: self.observed.as_ref().map(|(_, at)| now - *at).unwrap_or_default(),
        });
        let leading = self.renewed.map(|t| now - t);
        let decision = decide::decide(seen.as_ref(), &self.settings.identity, leading, self.settings.renew_deadline);
        let stamp = MicroTime(jiff::Timestamp::now());
        let write = match decision {
            Decision::Wait { holder, expires_in } => return Ok(Outcome::Standby { holder, expires_in }),
            Decision::Lost(reason) => {
                self.renewed = None;
                return Ok(Outcome::Lost(reason));
            }
            Decision::Create => Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(NAMESPACE.into()),
                    ..Default::default()
                },
                spec: Some(self.spec(Some(stamp.clone()), stamp, 0)),
            },
            Decision::Acquire => {
                let transitions = spec.lease_transitions.unwrap_or_default().saturating_add(1);
                Lease { spec: Some(self.spec(Some(stamp.clone()), stamp, transitions)), ..current.clone().unwrap() }
            }
            Decision::Renew => {
                let transitions = spec.lease_transitions.unwrap_or_default();
                Lease {
                    spec: Some(self.spec(spec.acquire_time.clone(), stamp, transitions)),
                    ..current.clone().unwrap()
                }
            }
        };
        let result = match current {
            None => self.api.create(&PostParams::default(), &write).await,
            // Carries the resourceVersion read above: a write in between fails with 409.
            Some(_) => self.api.replace(&name, &PostParams::default(), &write).await,
        };
        match result {
            Ok(written) => {
                self.observed = written.metadata.resource_version.clone().map(|rv| (rv, Instant::now()));
                self.renewed = Some(now);
                self.written = Some(written);
                Ok(Outcome::Leading)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Conflict),
            Err(kube::Error::Api(s)) if s.code == 404 && current_is_create(&write) => {
                self.ensure_namespace().await?;
                Ok(Outcome::Conflict)
            }
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: Option<MicroTime>, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.lease_duration.as_secs().max(1) as i32),
            acquire_time: acquired,
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    async fn ensure_namespace(&self) -> Result<(), kube::Error> {
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(NAMESPACE.into()), ..Default::default() },
            ..Default::default()
        };
        match self.namespaces.create(&PostParams::default(), &ns).await {
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Gives the lease up (holder cleared), so a standby need not wait for it to expire. A
    /// conflict means someone else wrote it since: then it is not ours to release.
    async fn release(&mut self) {
        let Some(mut lease) = self.written.take() else { return };
        self.renewed = None;
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        let name = self.settings.lease_name.clone();
        match timeout(self.settings.retry_period, self.api.replace(&name, &PostParams::default(), &lease)).await {
            Ok(Ok(_)) => tracing::info!(lease = %name, "released the leader-election lease"),
            Ok(Err(e)) => {
                tracing::warn!(lease = %name, error = %error_message(&e), "cannot release the leader-election lease; it expires on its own")
            }
            Err(_) => {
                tracing::warn!(lease = %name, "releasing the leader-election lease timed out; it expires on its own")
            }
        }
    }
}

/// A create is the only write without a resourceVersion; its 404 means a missing namespace.
fn current_is_create(lease: &Lease) -> bool {
    lease.metadata.resource_version.is_none()
}

/// The default identity: hostname (the pod name in Kubernetes) and process id, unique among
/// replicas and across restarts.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tmc-manager".into());
    format!("{host}_{}", std::process::id())
}
