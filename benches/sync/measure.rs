//! The timed work, each beside its floor: the same writes done by a bare client, timed the same
//! way (until a watch on the cluster delivers the object).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, DynamicObject, PostParams};

use crate::setup::{Bench, TWO, cm, widget, widget_resource};

/// Who makes the writes: the bare client (kcp write, then the cluster writes itself) or kcp-tmc
/// (the kcp write only; the syncer makes the cluster write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    Floor,
    Tmc,
}

/// Where an object goes: the workspace, and the clusters it must reach; a Widget rather than a
/// ConfigMap when `widget`.
#[derive(Clone, Debug)]
pub struct Route {
    pub workspace: String,
    pub clusters: Vec<usize>,
    pub widget: bool,
}

impl Bench {
    /// The route of sample `n` spread over the one-target workspaces.
    pub fn spread(&self, n: usize) -> Route {
        let i = n % self.workspaces.len();
        Route { workspace: self.workspaces[i].clone(), clusters: vec![i % 2], widget: false }
    }

    /// The route of Widget `n`, spread over the one-target workspaces placed on the first
    /// cluster: the cluster the peer publishes its Widgets from.
    pub fn widgets(&self, n: usize) -> Route {
        let on_first: Vec<&String> = self.workspaces.iter().step_by(2).collect();
        Route { workspace: on_first[n % on_first.len()].clone(), clusters: vec![0], widget: true }
    }

    /// The route into the workspace placed on both clusters.
    pub fn both(&self) -> Route {
        Route { workspace: TWO.into(), clusters: vec![0, 1], widget: false }
    }

    /// One object written by `writer` along `route`; returns when its writes are made (not when
    /// it arrived).
    async fn write(&self, writer: Writer, route: &Route, name: &str) -> Result<(), kube::Error> {
        let ns = if writer == Writer::Floor { "floor" } else { "load" };
        if writer == Writer::Tmc {
            self.written.lock().unwrap().insert(name.to_string(), Instant::now());
        }
        if route.widget {
            assert!(writer == Writer::Tmc, "the floor writes ConfigMaps");
            let kcp = self.clients.path(&route.workspace.parse().unwrap());
            let api = Api::<DynamicObject>::namespaced_with(kcp, ns, &widget_resource());
            return api.create(&PostParams::default(), &widget(name)).await.map(|_| ());
        }
        self.kcp_api(&route.workspace, ns).create(&PostParams::default(), &cm(name)).await?;
        if writer == Writer::Floor {
            // The bare client writes every cluster at once, as a syncer per target would.
            let writes = route
                .clusters
                .iter()
                .map(|c| async move { self.floor_api(*c).create(&PostParams::default(), &cm(name)).await });
            futures::future::try_join_all(writes).await?;
        }
        Ok(())
    }

    /// kcp write → object in the cluster(s), one object at a time (no queueing); milliseconds.
    pub async fn one_at_a_time(&self, writer: Writer, prefix: &str, samples: usize) -> Vec<f64> {
        self.one_at_a_time_along(writer, prefix, samples, |n| self.spread(n)).await
    }

    /// [`Bench::one_at_a_time`] along `route(n)` for object `n`.
    pub async fn one_at_a_time_along(
        &self,
        writer: Writer,
        prefix: &str,
        samples: usize,
        route: impl Fn(usize) -> Route,
    ) -> Vec<f64> {
        let mut out = vec![];
        for n in 0..samples {
            let route = route(n);
            let name = format!("{prefix}-{n}");
            let t = Instant::now();
            self.write(writer, &route, &name).await.unwrap();
            let at = self.wait_arrived(&name, &route.clusters, Duration::from_secs(60)).await;
            out.push(at.duration_since(t).as_secs_f64() * 1000.0);
        }
        out
    }

    /// `count` objects started at `per_second` along `route`, each timed from the start of its
    /// kcp write to its arrival in every cluster of the route; milliseconds.
    pub async fn steady(&self, writer: Writer, route: &Route, prefix: &str, count: usize, per_second: u32) -> Vec<f64> {
        let started = paced(count, per_second, |n| {
            let name = format!("{prefix}-{n}");
            async move { self.write(writer, route, &name).await }
        })
        .await;
        let mut out = vec![];
        for (n, t) in started.into_iter().enumerate() {
            let at = self.wait_arrived(&format!("{prefix}-{n}"), &route.clusters, Duration::from_secs(300)).await;
            out.push(at.duration_since(t).as_secs_f64() * 1000.0);
        }
        out
    }

    /// `count` objects over the one-target workspaces, 32 in flight; objects per second until
    /// all arrived in their clusters (both writers timed until the watch delivers). Prints
    /// progress every 5 s.
    pub async fn burst(&self, writer: Writer, prefix: &str, count: usize) -> f64 {
        self.burst_along(writer, prefix, count, |n| self.spread(n)).await
    }

    /// [`Bench::burst`] along `route(n)` for object `n`.
    pub async fn burst_along(&self, writer: Writer, prefix: &str, count: usize, route: impl Fn(usize) -> Route) -> f64 {
        let t = Instant::now();
        let progress = tokio::spawn(progress(self.arrivals.clone(), prefix.to_string(), count, t));
        let route = &route;
        stream::iter(0..count)
            .map(|n| async move { self.write(writer, &route(n), &format!("{prefix}-{n}")).await })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        for n in 0..count {
            self.wait_arrived(&format!("{prefix}-{n}"), &route(n).clusters, Duration::from_secs(900)).await;
        }
        progress.abort();
        count as f64 / t.elapsed().as_secs_f64()
    }
}

/// A line every 5 s while a burst runs: how many of its objects arrived, and the rate.
async fn progress(arrivals: crate::setup::Arrivals, prefix: String, count: usize, t: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        let done = arrivals.lock().unwrap().keys().filter(|(_, n)| n.starts_with(&format!("{prefix}-"))).count();
        let secs = t.elapsed().as_secs_f64();
        eprintln!("bench:   {prefix}: {done}/{count} arrived after {secs:.0} s ({:.0}/s)", done as f64 / secs);
    }
}

/// Starts `write(n)` for every `n` below `count` at `per_second`, each on its own tick whatever the
/// earlier ones are doing; returns once all are written, with the moment each one started.
pub async fn paced<F, Fut, E>(count: usize, per_second: u32, write: F) -> Vec<Instant>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Debug,
{
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut started = Vec::with_capacity(count);
    while started.len() < count || !in_flight.is_empty() {
        tokio::select! {
            _ = tick.tick(), if started.len() < count => {
                in_flight.push(write(started.len()));
                started.push(Instant::now());
            }
            Some(written) = in_flight.next() => written.unwrap(),
        }
    }
    started
}
