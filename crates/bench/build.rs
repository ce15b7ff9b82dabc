//! Which outside tools the tests can use here (see `unhidra-test-gates`), and whether Debian's
//! Mosquitto is installed: the test of the `mosquitto` scenarios starts a broker of its own
//! from `/usr/sbin/mosquitto`, so it needs the binary, not a running broker.
//!
//! `unhidra_mosquitto` is set when the binary is there. Without it the test is reported as
//! ignored, with its reason, unless `UNHIDRA_TEST_MQTT_URL` is set (`unhidra_mqtt_broker`):
//! that says the machine provides Mosquitto, so the test runs and fails if it is missing.

use std::os::unix::fs::PermissionsExt;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

fn main() {
    unhidra_test_gates::emit(&[]);
    // Installing or removing a package changes the directory.
    println!("cargo:rerun-if-changed=/usr/sbin");
    println!("cargo:rustc-check-cfg=cfg(unhidra_mosquitto)");
    let installed = std::fs::metadata(MOSQUITTO)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if installed {
        println!("cargo:rustc-cfg=unhidra_mosquitto");
    } else if std::env::var_os("UNHIDRA_TEST_MQTT_URL").is_some_and(|v| !v.is_empty()) {
        println!(
            "cargo:warning={MOSQUITTO} is missing although UNHIDRA_TEST_MQTT_URL is set: the \
             test of the `mosquitto` benchmark scenarios will fail (apt-get install mosquitto)"
        );
    } else {
        println!(
            "cargo:warning={MOSQUITTO} is missing: the test of the `mosquitto` benchmark \
             scenarios is ignored (apt-get install mosquitto)"
        );
    }
}
