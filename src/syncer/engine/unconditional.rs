//! Patches of the kcp object that carry no resourceVersion (evidence, per-target status, the
//! upstream status). Such a patch cannot be stale, yet kcp may answer it with 409: the APIExport
//! virtual workspace turns a PATCH into a read and a guarded update, and gives up after client-go's
//! `retry.DefaultRetry` (5 tries ~10 ms apart) when other writers keep changing the object — every
//! target's syncer and the Placement reconciler write the same object when a namespace moves or
//! is deleted. Sending the same patch again later is always right, so a 409 is retried here, a few
//! times and further apart than the server did, before it counts as a failed sync.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde::Serialize;

/// Attempts of one patch (the first included).
const ATTEMPTS: u32 = 4;
/// The wait before the second attempt; it doubles for each further one (50, 100, 200 ms).
const FIRST_WAIT: Duration = Duration::from_millis(50);

/// Where the patch goes: the object, or its status subresource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    Object,
    Status,
}

/// Sends `patch` (which must not carry a resourceVersion) and sends it again on 409.
pub(super) async fn patch<P: Serialize + std::fmt::Debug>(
    api: &Api<DynamicObject>,
    name: &str,
    part: Part,
    patch: &Patch<P>,
) -> kube::Result<DynamicObject> {
    let params = PatchParams::default();
    let mut wait = FIRST_WAIT;
    for attempt in 1.. {
        let sent = match part {
            Part::Object => api.patch(name, &params, patch).await,
            Part::Status => api.patch_status(name, &params, patch).await,
        };
        match sent {
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < ATTEMPTS => {
                tracing::debug!(attempt, "patch without resourceVersion answered 409; sending it again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    unreachable!("the loop returns by its last attempt")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;

    fn reply(code: u16) -> Response<Body> {
        let body = if code == 200 {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n"}})
        } else {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": code, "message": "the object has been modified"})
        };
        Response::builder().status(code).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap()
    }

    /// Runs one patch against a server answering `codes` in turn; returns the result's status
    /// code and the requests the server saw.
    async fn run(part: Part, codes: Vec<u16>) -> (u16, Vec<String>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for code in codes {
                let Some((request, send)) = handle.next_request().await else { break };
                seen.push(format!("{} {}", request.method(), request.uri().path()));
                send.send_response(reply(code));
            }
            seen
        });
        let client = kube::Client::new(service, "n");
        let api: Api<DynamicObject> = Api::namespaced_with(
            client,
            "n",
            &kube::core::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
        );
        let p = Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}}));
        let code = match patch(&api, "a", part, &p).await {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(e) => panic!("unexpected error {e}"),
        };
        // Without a client the server runs out of requests and returns what it saw.
        drop(api);
        (code, server.await.unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn conflicts_are_sent_again_then_given_up() {
        let object = "PATCH /api/v1/namespaces/n/configmaps/a";
        let status = "PATCH /api/v1/namespaces/n/configmaps/a/status";
        // (where, server answers, result, requests made)
        let cases: Vec<(Part, Vec<u16>, u16, usize)> = vec![
            (Part::Object, vec![200], 200, 1),
            (Part::Object, vec![409, 409, 200], 200, 3),
            (Part::Object, vec![409, 409, 409, 409, 200], 409, 4),
            (Part::Status, vec![409, 200], 200, 2),
            // Anything but a conflict is not retried here: the engine's backoff handles it.
            (Part::Object, vec![404, 200], 404, 1),
            (Part::Status, vec![422, 200], 422, 1),
        ];
        for (part, codes, want, requests) in cases {
            let (code, seen) = run(part, codes.clone()).await;
            assert_eq!(code, want, "{part:?} {codes:?}");
            let path = if part == Part::Object { object } else { status };
            assert_eq!(seen, vec![path.to_string(); requests], "{part:?} {codes:?}");
        }
    }
}
