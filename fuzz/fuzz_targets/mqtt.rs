//! MQTT packet handling, end to end: the native listener of a running server, over TCP.
//!
//! Each input is one connection (see `mqtt_input`): a CONNECT the harness writes, then
//! publishes, subscriptions and raw bytes from the fuzzer, then the client's end of stream.
//! The server must answer within its deadlines and close, and everything it sent must decode,
//! with the client's own codec, as whole packets of the version the client spoke.

#![no_main]

use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unhidra_fuzz::mqtt_input::Input;
use unhidra_fuzz::server::{connect, server};

fuzz_target!(|data: &[u8]| {
    let server = server();
    let input = Input::decode(data);
    let packets = input.packets(&server.device_id, &server.device_key);
    let received = server.rt.block_on(async {
        let mut stream = connect(server.mqtt).await.expect("a connection");
        // The server may close before it has read everything: that is its right.
        let _ = stream.write_all(&packets).await;
        let _ = stream.shutdown().await;
        let mut received = Vec::new();
        // The CONNECT deadline is 10 s; a session that saw end of stream ends at once.
        match tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received)).await
        {
            Ok(_) => received,
            Err(_) => panic!("the server neither answered nor closed within 20 s"),
        }
    });
    let mut buf = BytesMut::from(received.as_slice());
    while !buf.is_empty() {
        let whole = buf.clone();
        let decoded = if input.v5 {
            v5::Packet::read(&mut buf, None)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        } else {
            v4::Packet::read(&mut buf, usize::MAX)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        };
        if let Err(err) = decoded {
            panic!(
                "the server sent bytes that are not an MQTT {} packet ({err}), starting {:02x?}",
                if input.v5 { "5" } else { "3.1.1" },
                whole.get(..256).unwrap_or(&whole)
            );
        }
    }
});
