//! Heap bytes per cached object, counted by the allocator (tests only): the memory targets of
//! the shared view as a unit test, besides the whole-process figures `make bench` measures.
//!
//! The count is per thread (each test runs on its own thread), of the sizes asked for, plus a
//! fixed 16 bytes per allocation for the allocator's own header and rounding.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use serde_json::json;

use crate::kcp::ClusterKey;
use crate::runtime::cache::ClusterCache;
use crate::syncer::kept::Held;

struct Counting;

thread_local! {
    /// (live bytes asked for, live allocations) on this thread.
    static LIVE: Cell<(isize, isize)> = const { Cell::new((0, 0)) };
}

fn count(bytes: isize, allocations: isize) {
    // A thread being torn down has no counter left; nothing is measured there.
    let _ = LIVE.try_with(|c| {
        let (b, a) = c.get();
        c.set((b + bytes, a + allocations));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize, 1);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize), -1);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize, 0);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes this thread holds, counting the allocator's overhead.
fn held_bytes() -> isize {
    let (bytes, allocations) = LIVE.with(Cell::get);
    bytes + 16 * allocations
}

/// A ConfigMap as the view receives it from kcp's virtual workspace: kcp's claim label and
/// `kcp.io/cluster` annotation, a generated UID, 1 KiB of data.
fn configmap(n: usize) -> kube::api::DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": format!("unplaced-{n}"), "namespace": "unplaced",
            "uid": format!("3f0c1a52-7d0e-4c1b-9a53-{n:012}"), "resourceVersion": format!("{}", 100_000 + n),
            "creationTimestamp": "2026-12-05T06:00:00Z",
            "labels": {"claimed.internal.apis.kcp.io/3X6Xrq1GqmHbJ4yYIbHMLrq1AsjWmxS3dIbaxq": "2o0fTzBNvPEMjXhmnM0b6sVzQw3YpuTzuhsNA4"},
            "annotations": {"kcp.io/cluster": "2p7yxo1kvmx3ld0h"},
        },
        "data": {"payload": "u".repeat(1024)},
    }))
    .expect("a ConfigMap")
}

/// What the view holds per object of a namespace placed nowhere, measured over 1,000 of them
/// (target: at most 1 KB each, issue 11).
#[test]
fn an_unplaced_object_costs_the_view_under_a_kilobyte() {
    let keys: Vec<ClusterKey> = (0..1000).map(|n| ClusterKey::of(&configmap(n)).expect("a key")).collect();
    let cache: ClusterCache<Held> = ClusterCache::default();
    let before = held_bytes();
    for (n, key) in keys.iter().enumerate() {
        // Arrives whole (as decoded from a watch event), is kept slim, the rest is freed.
        cache.insert(key, Held::new(configmap(n), false, true));
    }
    let per_object = (held_bytes() - before) / 1000;
    println!("an unplaced ConfigMap costs the view {per_object} bytes");
    assert!(per_object <= 1000, "an unplaced ConfigMap costs the view {per_object} bytes (at most 1,000)");
}

/// What the view holds per object of a placed namespace: kept whole, as its JSON encoding plus
/// the metadata-only form (what routing reads without decoding), not as a decoded tree of
/// strings and maps (issue 11's memory budget: 5 KB per synced object).
#[test]
fn a_placed_object_is_kept_encoded() {
    let keys: Vec<ClusterKey> = (0..1000).map(|n| ClusterKey::of(&configmap(n)).expect("a key")).collect();
    let encoded = serde_json::to_vec(&configmap(0)).expect("encodes").len() as isize;
    let cache: ClusterCache<Held> = ClusterCache::default();
    let before = held_bytes();
    for (n, key) in keys.iter().enumerate() {
        cache.insert(key, Held::new(configmap(n), true, true));
    }
    let per_object = (held_bytes() - before) / 1000;
    let decoded = {
        let before = held_bytes();
        let objects: Vec<_> = (0..100).map(configmap).collect();
        let per = (held_bytes() - before) / 100;
        drop(objects);
        per
    };
    println!("a placed ConfigMap of {encoded} bytes of JSON costs the view {per_object} bytes (decoded: {decoded})");
    assert!(
        per_object <= encoded + 1000,
        "a placed ConfigMap costs the view {per_object} bytes, over its {encoded}-byte encoding plus 1,000"
    );
    assert!(per_object < decoded, "kept encoded ({per_object} bytes) costs less than decoded ({decoded})");
}
