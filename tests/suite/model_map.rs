//! `model_map` alone, with a fake batch worker that doubles numbers: partial batches flushed
//! when a version completes, a panicking worker answered with error records (not a hang),
//! retractions answered from the memo, and good records and errors on separate outputs.

use crate::common;

use common::sorted_updates;
use differential_dataflow::input::Input;
use discl::operators::model_map::{model_map, ModelMap};
use discl::operators::NodeStats;
use discl::record::ErrorRecord;
use discl::runtime::service::{BatchWorker, ServiceStats};
use discl::runtime::InferenceService;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use timely::dataflow::operators::capture::Capture;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Probe;

/// Doubles numbers, counting its calls; panics on a batch holding `panic_on`.
struct Doubler {
    calls: Arc<AtomicUsize>,
    panic_on: Option<u64>,
}

impl BatchWorker for Doubler {
    type Item = u64;
    type Output = Result<u64, String>;
    fn run(&mut self, items: Vec<u64>, stats: &ServiceStats) -> Vec<Result<u64, String>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        stats.model_call();
        if let Some(bad) = self.panic_on {
            assert!(!items.contains(&bad), "cannot double {bad}");
        }
        items.into_iter().map(|x| Ok(2 * x)).collect()
    }
    fn failed(message: &str) -> Result<u64, String> {
        Err(message.to_string())
    }
}

/// Numbers up to 1000 are doubled by the worker; larger ones are refused without a call.
struct Double {
    retracted_capacity: usize,
}

impl ModelMap for Double {
    type In = u64;
    type Out = u64;
    type Key = u64;
    type Worker = Doubler;

    fn route(&self, n: &u64) -> u64 {
        *n
    }
    fn key(&self, n: &u64) -> u64 {
        *n
    }
    fn request(&self, n: &u64) -> Result<u64, Result<u64, String>> {
        if *n > 1000 {
            Err(Err(format!("{n} is too large")))
        } else {
            Ok(*n)
        }
    }
    fn answer(&self, n: &u64, answer: &Result<u64, String>) -> Result<u64, ErrorRecord> {
        answer.clone().map_err(|message| ErrorRecord {
            node: "double".into(),
            location: n.to_string(),
            message,
        })
    }
    fn retracted_capacity(&self) -> usize {
        self.retracted_capacity
    }
}

/// A service of one fake worker, and its call counter.
fn service(panic_on: Option<u64>) -> (Arc<InferenceService<Doubler>>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = Doubler {
        calls: Arc::clone(&calls),
        panic_on,
    };
    (
        Arc::new(InferenceService::start("double", vec![worker])),
        calls,
    )
}

type Updates<D> = Vec<(D, u64, isize)>;

/// Runs `model_map` over `updates`, one version after another, each complete (answered)
/// before the next is fed; the good and the error updates.
fn run(
    updates: Vec<(u64, u64, isize)>,
    batch_size: usize,
    retracted_capacity: usize,
    service: Arc<InferenceService<Doubler>>,
    stats: Arc<NodeStats>,
) -> (Updates<u64>, Updates<ErrorRecord>) {
    let (good, errors) = timely::execute_directly(move |worker| {
        let service = Arc::clone(&service);
        let stats = Arc::clone(&stats);
        let probe = ProbeHandle::new();
        let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, numbers) = scope.new_collection::<u64, isize>();
            let map = Double { retracted_capacity };
            let (good, errors) = model_map(numbers, "double", map, service, batch_size, stats);
            let good = good.inner.probe_with(&probe).capture();
            (input, (good, errors.inner.probe_with(&probe).capture()))
        });
        let last = updates.iter().map(|(_, t, _)| *t).max().unwrap_or(0);
        for version in 0..=last {
            for (n, _, diff) in updates.iter().filter(|(_, t, _)| *t == version) {
                input.update_at(*n, version, *diff);
            }
            input.advance_to(version + 1);
            input.flush();
            worker.step_while(|| probe.less_than(&(version + 1)));
        }
        input.close();
        captured
    });
    (sorted_updates(good), sorted_updates(errors))
}

#[test]
fn a_partial_batch_goes_when_its_version_completes() {
    let (service, calls) = service(None);
    let stats = Arc::new(NodeStats::default());
    let (in_service, in_stats) = (Arc::clone(&service), Arc::clone(&stats));
    let good = timely::execute_directly(move |worker| {
        let probe = ProbeHandle::new();
        let (mut input, good) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, numbers) = scope.new_collection::<u64, isize>();
            let map = Double {
                retracted_capacity: 0,
            };
            let (good, errors) = model_map(numbers, "double", map, in_service, 8, in_stats);
            errors.inner.probe_with(&probe);
            (input, good.inner.probe_with(&probe).capture())
        });
        for n in [1, 2, 3] {
            input.update_at(n, 0, 1);
        }
        input.flush();
        // Version 0 is still open: three items are not a batch of eight, nothing is sent.
        for _ in 0..20 {
            worker.step();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        input.advance_to(1);
        input.flush();
        worker.step_while(|| probe.less_than(&1));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        input.close();
        good
    });
    assert_eq!(sorted_updates(good), vec![(2, 0, 1), (4, 0, 1), (6, 0, 1)]);
    assert_eq!(service.stats().snapshot().0, 1);
    let summary = stats.summary(0.0);
    assert_eq!((summary.batches, summary.model_calls), (1, 1));
    assert_eq!((summary.records_in, summary.records_out), (3, 3));
}

#[test]
fn a_panicking_worker_gives_error_records_not_a_hang() {
    let (service, calls) = service(Some(13));
    let stats = Arc::new(NodeStats::default());
    let updates = vec![(12, 0, 1), (13, 0, 1), (5, 1, 1)];
    let (good, errors) = run(updates, 2, 16, service, Arc::clone(&stats));
    // 12 and 13 share a batch, which panics; 5 comes in a batch of its own.
    assert_eq!(good, vec![(10, 1, 1)]);
    let failed = |n: u64| ErrorRecord {
        node: "double".into(),
        location: n.to_string(),
        message: "the inference service failed on this batch: cannot double 13".into(),
    };
    assert_eq!(errors, vec![(failed(12), 0, 1), (failed(13), 0, 1)]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let summary = stats.summary(0.0);
    assert_eq!((summary.errors, summary.records_out), (2, 1));
    assert_eq!(summary.model_calls, 2, "the panicking batch's call counts");
}

#[test]
fn a_retraction_negates_exactly_without_a_model_call() {
    let (service, calls) = service(None);
    let stats = Arc::new(NodeStats::default());
    let updates = vec![(5, 0, 1), (7, 0, 2), (5, 1, -1), (7, 1, -1), (5, 2, 1)];
    let (good, errors) = run(updates, 8, 16, service, Arc::clone(&stats));
    assert_eq!(
        good,
        vec![(10, 0, 1), (10, 1, -1), (10, 2, 1), (14, 0, 2), (14, 1, -1)]
    );
    assert!(errors.is_empty());
    // One batch for time 0; the retractions (answered records) and 5's return at time 2 (from
    // the recently retracted answers) came from the memo.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let summary = stats.summary(0.0);
    assert_eq!((summary.computed, summary.cache_hits), (2, 3));
}

#[test]
fn past_the_retracted_cache_a_returning_key_is_asked_again() {
    let (service, calls) = service(None);
    let stats = Arc::new(NodeStats::default());
    // Keeping no retracted answers: 5 is asked for again when it returns at time 2.
    let updates = vec![(5, 0, 1), (5, 1, -1), (5, 2, 1)];
    let (good, _) = run(updates, 8, 0, service, stats);
    assert_eq!(good, vec![(10, 0, 1), (10, 1, -1), (10, 2, 1)]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn good_records_and_errors_go_to_separate_outputs() {
    let (service, calls) = service(Some(13));
    let stats = Arc::new(NodeStats::default());
    let updates = vec![
        (1, 0, 1),
        (2000, 0, 1),
        (13, 1, 1),
        (2, 2, 1),
        (2000, 3, -1),
    ];
    let (good, errors) = run(updates, 1, 16, service, Arc::clone(&stats));
    assert_eq!(good, vec![(2, 0, 1), (4, 2, 1)]);
    let error = |n: u64, message: &str| ErrorRecord {
        node: "double".into(),
        location: n.to_string(),
        message: message.into(),
    };
    let failed = "the inference service failed on this batch: cannot double 13";
    assert_eq!(
        errors,
        vec![
            (error(13, failed), 1, 1),
            (error(2000, "2000 is too large"), 0, 1),
            (error(2000, "2000 is too large"), 3, -1),
        ]
    );
    // 2000 never reached the worker.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let summary = stats.summary(0.0);
    assert_eq!((summary.records_out, summary.errors), (2, 3));
}
