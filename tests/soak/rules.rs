//! The soak's pure parts (parsing `/proc` and `/metrics`, the verdicts), tested in seconds by
//! `make test`; the soak itself (`tests/soak/main.rs`) runs only under `make soak`.

#[allow(dead_code)]
#[path = "judge.rs"]
mod judge;
#[allow(dead_code)]
#[path = "sample.rs"]
mod sample;

#[cfg(test)]
mod judge_tests {
    use crate::judge::*;
    use crate::sample::Sample;

    fn s(elapsed_s: f64, incarnation: u32, vm_hwm_kb: u64, errors: Option<[u64; 3]>) -> Sample {
        Sample { elapsed_s, incarnation, vm_hwm_kb, errors, ..Default::default() }
    }

    #[test]
    fn no_failures_but_conflicts_table() {
        let conflict = "2026-12-04T14:53:28Z  WARN sync{target=west}: kcp_tmc::syncer::engine: sync failed error=add finalizer: Operation cannot be fulfilled (409 Conflict) retry_in=500ms";
        let refused = "2026-12-04T14:53:29Z  WARN sync{target=west}: kcp_tmc::syncer::engine: sync failed error=apply: forbidden (403 Forbidden)";
        let error = "2026-12-04T14:53:30Z ERROR kcp_tmc::manager: watch failed";
        let info = "2026-12-04T14:53:31Z  INFO sync{target=west}: applied downstream namespace=kcp-x (409 Conflict)";
        let cases = [
            (vec![conflict, conflict, info], true, 2),
            (vec![conflict, refused], false, 1),
            (vec![error], false, 0),
            (vec![info], true, 0),
            (vec![], true, 0),
        ];
        for (lines, ok, conflicts) in cases {
            let log = lines.join("\n");
            assert_eq!(no_failures_but_conflicts(&log).ok, ok, "{log}");
            assert_eq!(log_failures(&log).0, conflicts, "{log}");
        }
    }

    #[test]
    fn peak_memory_halves_table() {
        let cases = [
            (vec![s(10.0, 1, 100_000, None), s(60.0, 2, 109_000, None)], true),
            (vec![s(10.0, 1, 100_000, None), s(60.0, 2, 91_000, None)], true),
            (vec![s(10.0, 1, 100_000, None), s(60.0, 2, 111_000, None)], false),
            (vec![s(10.0, 1, 100_000, None), s(60.0, 2, 89_000, None)], false),
            // The peak is the last sample of each incarnation.
            (vec![s(5.0, 1, 50_000, None), s(10.0, 1, 100_000, None), s(60.0, 2, 105_000, None)], true),
            (vec![s(10.0, 1, 100_000, None)], false),
            (vec![], false),
        ];
        for (samples, want) in cases {
            assert_eq!(peak_memory_halves(&samples).ok, want, "{samples:?}");
        }
    }

    #[test]
    fn peak_memory_flat_table() {
        let flat = vec![s(10.0, 1, 90_000, None), s(40.0, 1, 100_000, None), s(50.0, 1, 104_000, None)];
        let second = vec![s(70.0, 2, 80_000, None), s(95.0, 2, 95_000, None), s(100.0, 2, 99_000, None)];
        let cases = [
            ([flat.clone(), second.clone()].concat(), true),
            // Growth before the warm-up ends (at 30 s and at 90 s) does not count.
            (
                [flat.clone(), vec![s(70.0, 2, 50_000, None), s(95.0, 2, 95_000, None), s(100.0, 2, 104_000, None)]]
                    .concat(),
                true,
            ),
            // After it, more than 10% does, in either half.
            (
                [flat.clone(), vec![s(95.0, 2, 95_000, None), s(100.0, 2, 105_000, None), s(110.0, 2, 105_000, None)]]
                    .concat(),
                false,
            ),
            (
                [vec![s(10.0, 1, 90_000, None), s(40.0, 1, 100_000, None), s(50.0, 1, 120_000, None)], second.clone()]
                    .concat(),
                false,
            ),
            // No sample of the second half after its warm-up.
            ([flat.clone(), vec![s(61.0, 2, 95_000, None)]].concat(), false),
        ];
        for (samples, want) in cases {
            assert_eq!(peak_memory_flat(&samples, [0.0, 60.0], 30.0).ok, want, "{samples:?}");
        }
    }

    #[test]
    fn errors_flat_table() {
        let cases = [
            (vec![s(60.0, 2, 1, Some([1, 2, 3])), s(90.0, 2, 1, Some([1, 2, 3]))], true),
            (vec![s(60.0, 2, 1, Some([1, 2, 3])), s(90.0, 2, 1, Some([1, 2, 4]))], false),
            (vec![s(60.0, 2, 1, Some([1, 2, 3])), s(90.0, 2, 1, Some([2, 2, 3]))], false),
            // Growth before the last third (at 60 s) is allowed.
            (
                vec![s(30.0, 2, 1, Some([0, 0, 0])), s(60.0, 2, 1, Some([1, 2, 3])), s(90.0, 2, 1, Some([1, 2, 3]))],
                true,
            ),
            // Incarnation 1's counters are another process's.
            (vec![s(60.0, 1, 1, Some([0, 0, 0])), s(90.0, 2, 1, Some([5, 5, 5]))], false),
            // A failed scrape is not evidence of flatness.
            (vec![s(60.0, 2, 1, None), s(90.0, 2, 1, None)], false),
            (vec![s(60.0, 2, 1, Some([0, 0, 0]))], false),
        ];
        for (samples, want) in cases {
            assert_eq!(errors_flat(&samples, 60.0).ok, want, "{samples:?}");
        }
    }

    #[test]
    fn churn_ran_table() {
        let cases = [
            (100, 100, 0, true),
            (80, 100, 0, true),
            (79, 100, 0, false),
            // At most 1% failed writes (servers overloaded by the churn), no more.
            (100, 100, 1, true),
            (100, 100, 2, false),
            (3000, 3600, 30, true),
            (3000, 3600, 31, false),
            (0, 0, 0, false),
        ];
        for (writes, planned, errors, want) in cases {
            assert_eq!(churn_ran(writes, planned, errors).ok, want, "{writes} {planned} {errors}");
        }
    }
}

#[cfg(test)]
mod sample_tests {
    use crate::sample::*;

    #[test]
    fn memory_kb_table() {
        let cases = [
            ("Name:\ttmc\nVmHWM:\t  52000 kB\nVmRSS:\t  48000 kB\n", (52_000, 48_000)),
            ("VmRSS:\t 10 kB\n", (0, 10)),
            ("", (0, 0)),
        ];
        for (status, want) in cases {
            assert_eq!(memory_kb(status), want, "{status:?}");
        }
    }

    #[test]
    fn error_counts_table() {
        let metrics = "\
# HELP tmc_reconcile_total Reconciles finished, by controller and result.
tmc_reconcile_total{controller=\"placement\",result=\"error\"} 2
tmc_reconcile_total{controller=\"placement\",result=\"success\"} 90
tmc_reconcile_total{controller=\"synctarget\",result=\"error\"} 1
tmc_reconcile_total_other{result=\"error\"} 1000
tmc_syncer_operations_total{sync_target=\"k\",resource=\"configmaps\",operation=\"apply\",result=\"error\"} 3
tmc_syncer_operations_total{sync_target=\"k\",resource=\"configmaps\",operation=\"apply\",result=\"success\"} 70
tmc_workqueue_retries_total{queue=\"syncer\"} 4
tmc_workqueue_retries_total{queue=\"placement\"} 1
";
        let cases = [(metrics, [3, 3, 5]), ("", [0, 0, 0]), ("tmc_workqueue_retries_total 7\n", [0, 0, 7])];
        for (text, want) in cases {
            assert_eq!(error_counts(text), want, "{text}");
        }
    }

    #[test]
    fn grown_error_series_table() {
        type Grown = Vec<(String, u64)>;
        let before = "\
tmc_syncer_operations_total{operation=\"finalizer\",resource=\"configmaps\",result=\"error\",sync_target=\"a\"} 1
tmc_syncer_operations_total{operation=\"finalizer\",resource=\"configmaps\",result=\"error\",sync_target=\"b\"} 2
tmc_workqueue_retries_total{queue=\"syncer\"} 3
";
        let after = "\
tmc_syncer_operations_total{operation=\"finalizer\",resource=\"configmaps\",result=\"error\",sync_target=\"a\"} 4
tmc_syncer_operations_total{operation=\"finalizer\",resource=\"configmaps\",result=\"error\",sync_target=\"b\"} 2
tmc_syncer_operations_total{operation=\"apply\",resource=\"secrets\",result=\"error\",sync_target=\"b\"} 1
tmc_syncer_operations_total{operation=\"apply\",resource=\"secrets\",result=\"success\",sync_target=\"b\"} 9
tmc_workqueue_retries_total{queue=\"syncer\"} 3
";
        let finalizer = "tmc_syncer_operations_total{operation=\"finalizer\",resource=\"configmaps\",result=\"error\"}";
        let apply = "tmc_syncer_operations_total{operation=\"apply\",resource=\"secrets\",result=\"error\"}";
        let cases: [(&str, &str, Grown); 3] = [
            (before, after, vec![(finalizer.into(), 3), (apply.into(), 1)]),
            (after, after, vec![]),
            (
                "",
                "tmc_workqueue_retries_total{queue=\"placement\"} 2\n",
                vec![("tmc_workqueue_retries_total{queue=\"placement\"}".into(), 2)],
            ),
        ];
        for (b, a, want) in cases {
            assert_eq!(grown_error_series(b, a), want, "{b} → {a}");
        }
    }
}
