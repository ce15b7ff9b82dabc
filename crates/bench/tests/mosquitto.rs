//! The `mosquitto` benchmark scenarios at a tiny scale, each against a Mosquitto it starts on
//! a spare loopback port, checking what the scenario checks (every client connected, every
//! message acknowledged and delivered once, in order) and that the figures were measured.
//!
//! They need Debian's `/usr/sbin/mosquitto`, not a running broker. Without it they are
//! reported as ignored (see `build.rs`), unless `UNHIDRA_TEST_MQTT_URL` is set: that says the
//! machine provides Mosquitto (CI sets it), so they run and fail with the reason.

use std::path::Path;

use unhidra_bench::mosquitto::{BrokerArgs, DEFAULT_BINARY};
use unhidra_bench::mosquitto_fanout::{self, MosquittoFanoutArgs};
use unhidra_bench::mosquitto_idle::{self, MosquittoIdleArgs};
use unhidra_bench::mosquitto_pairs::{self, MosquittoPairsArgs};
use unhidra_bench::pinning::Pin;
use unhidra_bench::progress;

/// How each test starts the broker: unpinned (tests run side by side in one process).
fn broker() -> BrokerArgs {
    assert!(
        Path::new(DEFAULT_BINARY).is_file(),
        "{DEFAULT_BINARY} is missing, but UNHIDRA_TEST_MQTT_URL is set, which says this \
         machine provides Mosquitto: install it (apt-get install mosquitto)"
    );
    progress::hide();
    BrokerArgs::new(DEFAULT_BINARY.into(), Pin::Off)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(unhidra_mosquitto, unhidra_mqtt_broker)),
    ignore = "needs Debian's Mosquitto at /usr/sbin/mosquitto (apt-get install mosquitto)"
)]
async fn idle_clients_connect_and_stay_connected() {
    let report = mosquitto_idle::run(MosquittoIdleArgs {
        connections: 200,
        settle_ms: 200,
        hold_secs: 1,
        broker: broker(),
    })
    .await
    .unwrap();
    mosquitto_idle::check(&report).unwrap();
    assert_eq!(report.opened, 200);
    assert!(report.connects_per_sec > 0.0);
    assert!(report.connect_latency.p50_ms > 0.0);
    assert!(report.baseline.rss_kib > 0);
    assert!(report.held_rss_kib > 0);
    assert!(report.per_connection_bytes.is_finite());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(unhidra_mosquitto, unhidra_mqtt_broker)),
    ignore = "needs Debian's Mosquitto at /usr/sbin/mosquitto (apt-get install mosquitto)"
)]
async fn fanout_delivers_every_message_to_every_subscriber_once_in_order() {
    // As fast as PUBACKs come, then on a schedule.
    for rate in [0, 200] {
        let report = mosquitto_fanout::run(MosquittoFanoutArgs {
            subscribers: 10,
            messages: 20,
            publishers: 1,
            rate,
            window: None,
            payload_bytes: 100,
            timeout_secs: 30,
            broker: broker(),
        })
        .await
        .unwrap();
        mosquitto_fanout::check(&report).unwrap();
        assert_eq!(report.publish.acked, 20);
        assert_eq!(report.delivery.received, 200);
        assert_eq!(report.delivery.out_of_order, 0);
        assert!(report.delivery.per_sec > 0.0);
        assert!(report.delivery.latency.p50_ms > 0.0);
        assert!(report.publish.ack_latency.p50_ms > 0.0);
        assert_eq!(report.publish.ack_latency.count, 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(any(unhidra_mosquitto, unhidra_mqtt_broker)),
    ignore = "needs Debian's Mosquitto at /usr/sbin/mosquitto (apt-get install mosquitto)"
)]
async fn pairs_acknowledge_and_deliver_every_message_once_in_order() {
    let report = mosquitto_pairs::run(MosquittoPairsArgs {
        pairs: 2,
        window: 10,
        rate: 0,
        duration_secs: 10,
        drain_secs: 5,
        messages_per_pair: 50,
        payload_bytes: 100,
        broker: broker(),
    })
    .await
    .unwrap();
    mosquitto_pairs::check(&report).unwrap();
    assert_eq!(report.publish.sent, 100);
    assert_eq!(report.publish.acked, 100);
    assert_eq!(report.delivery.received, 100);
    assert_eq!(report.publish.ack_latency.count, 100);
    assert!(report.publish.acked_per_sec > 0.0);
    assert!(report.publish.ack_latency.p50_ms > 0.0);
    assert!(report.delivery.latency.p50_ms > 0.0);
}
