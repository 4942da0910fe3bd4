//! The host interface's calls on a fake Envoy: metrics by the filter's id,
//! callouts as tokens, a callout's answer, the plugin configuration.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use tollgate_filter::host::{Callout, Host, MetricKind, RootHost};

use super::*;
use crate::abi::EnvoyConfig as _;
use crate::fake::FakeEnvoy;

fn root(envoy: &FakeEnvoy, plugin: &[u8]) -> NativeRoot {
    NativeRoot::new(envoy.config(), plugin.to_vec())
}

fn call() -> Callout<'static> {
    Callout {
        cluster: "tollgate_sidecar",
        headers: &[(":path", "/")],
        body: b"",
        timeout_ms: 10,
    }
}

#[test]
fn a_metric_is_defined_in_envoy_once_per_name_and_kind() {
    let envoy = FakeEnvoy::new();
    let root = root(&envoy, b"{}");
    let counter = root.define_metric(MetricKind::Counter, "c").unwrap();
    assert_eq!(
        root.define_metric(MetricKind::Counter, "c").unwrap(),
        counter
    );
    let gauge = root.define_metric(MetricKind::Gauge, "c").unwrap();
    assert_ne!(gauge, counter);
    assert_eq!(root.metrics.borrow().len(), 2);
}

#[test]
fn a_counter_never_goes_down_and_a_gauge_goes_both_ways() {
    let envoy = FakeEnvoy::new();
    let root = root(&envoy, b"{}");
    let counter = root.define_metric(MetricKind::Counter, "requests").unwrap();
    let gauge = root.define_metric(MetricKind::Gauge, "buffered").unwrap();
    root.increment_metric(counter, 3).unwrap();
    root.increment_metric(counter, -2).unwrap();
    root.increment_metric(gauge, 5).unwrap();
    root.increment_metric(gauge, -2).unwrap();
    assert_eq!(envoy.metric("requests"), 3);
    assert_eq!(envoy.metric("buffered"), 3);
    assert!(root.increment_metric(gauge + 1, 1).is_err());
}

#[test]
fn a_stream_moves_only_the_metrics_its_configuration_defined() {
    let envoy = FakeEnvoy::new();
    let id = envoy.define_metric(false, "requests").unwrap();
    let metrics: Arc<[MetricDef]> = vec![MetricDef {
        name: "requests".into(),
        gauge: false,
        envoy_id: id,
    }]
    .into();
    let stream = NativeStream {
        envoy: envoy.stream(&[]).handle(),
        metrics,
        answer: Rc::new(RefCell::new(None)),
        resume_due: Rc::new(Cell::new(false)),
    };
    assert_eq!(stream.define_metric(MetricKind::Counter, "requests"), Ok(0));
    assert!(stream.define_metric(MetricKind::Gauge, "requests").is_err());
    assert!(stream.define_metric(MetricKind::Counter, "other").is_err());
    stream.increment_metric(0, 2).unwrap();
    assert_eq!(envoy.metric("requests"), 2);
}

#[test]
fn a_callout_is_the_filters_token_or_an_error() {
    let envoy = FakeEnvoy::new();
    let root = root(&envoy, b"{}");
    envoy.next_callout_id(41);
    assert_eq!(root.dispatch(&call()), Ok(41));
    assert_eq!(envoy.sent()[0].cluster, "tollgate_sidecar");
    envoy.next_callout_id(u64::from(u32::MAX) + 1);
    assert!(root.dispatch(&call()).is_err());
    envoy.refuse_callouts(true);
    assert!(root.dispatch(&call()).is_err());
}

#[test]
fn a_callouts_answer_is_read_only_while_it_is_handled() {
    let envoy = FakeEnvoy::new();
    let root = root(&envoy, b"{}");
    assert_eq!(root.callout_status(), None);
    assert_eq!(root.callout_body(3), None);
    *root.answer.borrow_mut() = Some(Answer {
        status: Some(b"200".to_vec()),
        body: b"hello".to_vec(),
    });
    assert_eq!(root.callout_status().as_deref(), Some(b"200".as_slice()));
    assert_eq!(root.callout_body(4).as_deref(), Some(b"hell".as_slice()));
    assert_eq!(root.callout_body(99).as_deref(), Some(b"hello".as_slice()));
}

#[test]
fn the_plugin_configuration_is_given_only_at_its_own_size() {
    let envoy = FakeEnvoy::new();
    let configured = root(&envoy, b"{\"a\":1}");
    assert_eq!(
        configured.plugin_config(7).as_deref(),
        Some(b"{\"a\":1}".as_slice())
    );
    assert_eq!(configured.plugin_config(6), None);
    assert_eq!(root(&envoy, b"").plugin_config(0), None);
}

/// The replay store's compare-and-swap on the process-wide shared table,
/// under real contention: threads stand in for Envoy workers (each with a
/// root of its own), and every `jti` is claimed by all of them at once.
/// Exactly one claim of each lands, and losers did re-read. The end-to-end
/// race through Envoy rarely lands two claims within the microsecond this
/// build's read-modify-write takes, so the retry path is proven here: the
/// threads spin (rather than sleep) until all are ready, so they start each
/// claim within a fraction of that.
#[test]
fn copies_of_one_jti_racing_on_several_workers_let_exactly_one_in() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tollgate_filter::replay::{claim, Claimed, JtiClaim, ReplayPolicy, ReplayScope};

    const WORKERS: usize = 2;
    const JTIS: usize = 400;
    let policy = ReplayPolicy {
        slots: 65536,
        scope: ReplayScope::Instance,
    };
    let ready = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let ready = Arc::clone(&ready);
            std::thread::spawn(move || {
                let envoy = FakeEnvoy::new();
                let root = root(&envoy, b"{}");
                let (mut recorded, mut retries) = (Vec::new(), 0);
                for n in 0..JTIS {
                    let jti = format!("native-host-race-{n}");
                    let claim_of = JtiClaim::new(&jti, 2_000_000_000, 30, &policy).by_key(7);
                    ready.fetch_add(1, Ordering::SeqCst);
                    while ready.load(Ordering::SeqCst) < (n + 1) * WORKERS {
                        std::hint::spin_loop();
                    }
                    let (claimed, lost) = claim(&root, &claim_of, 1_000_000_000);
                    retries += lost;
                    match claimed {
                        Claimed::Recorded => recorded.push(n),
                        Claimed::Replayed => {}
                        other => panic!("jti {n}: {other:?}"),
                    }
                }
                (recorded, retries)
            })
        })
        .collect();
    let mut winners = vec![0; JTIS];
    let mut retries = 0;
    for worker in workers {
        let (recorded, lost) = worker.join().unwrap();
        retries += lost;
        for n in recorded {
            winners[n] += 1;
        }
    }
    assert!(
        winners.iter().all(|&w| w == 1),
        "winners per jti: {winners:?}"
    );
    assert!(
        retries > 0,
        "no claim lost a compare-and-swap in {JTIS} races"
    );
}
