//! Which of the tests' outside requirements this build can meet.
//!
//! A test that needs something outside the workspace (the ML worker's virtualenv, a running
//! MQTT broker, `python3`, root for mounting filesystems) must not pass silently when that
//! thing is missing. Each crate with such tests calls [`emit`] from its `build.rs`; every gate
//! that is met becomes a `cfg` flag, and the tests carry
//!
//! ```text
//! #[cfg_attr(not(unhidra_ml), ignore = "needs UNHIDRA_TEST_ML_PYTHON (the ML worker's venv)")]
//! ```
//!
//! so that `cargo test` lists them as `ignored` with the reason. `.ci/run` provides everything,
//! sets the variables, and fails when any test was ignored.

use std::path::Path;

/// One requirement, the cfg flag that says it is met, and how to tell.
struct Gate {
    cfg: &'static str,
    met: fn() -> bool,
    /// Said in a build warning when the gate is not met.
    missing: &'static str,
}

const GATES: &[Gate] = &[
    Gate {
        cfg: "unhidra_ml",
        met: || non_empty("UNHIDRA_TEST_ML_PYTHON"),
        missing: "UNHIDRA_TEST_ML_PYTHON is not set: tests with real ML workers are ignored \
                  (scripts/setup-ml.sh makes .venv-ml; .ci/run sets it)",
    },
    Gate {
        cfg: "unhidra_mqtt_broker",
        met: || non_empty("UNHIDRA_TEST_MQTT_URL"),
        missing: "UNHIDRA_TEST_MQTT_URL is not set: tests against a real MQTT broker are \
                  ignored (.ci/run sets it to the machine's Mosquitto)",
    },
    Gate {
        cfg: "unhidra_python3",
        met: || on_path("python3"),
        missing: "python3 is not on PATH: tests that run Python peers are ignored",
    },
    Gate {
        cfg: "unhidra_root",
        met: is_root,
        missing: "not building as root: tests that mount filesystems are ignored",
    },
];

/// Emits `cargo:rustc-cfg` for every met gate (and `rustc-check-cfg` for all of them), and a
/// build warning for each gate among `used` (the crate's tests' gates) that is not met. Call
/// it from `build.rs`.
pub fn emit(used: &[&str]) {
    println!("cargo:rerun-if-env-changed=UNHIDRA_TEST_ML_PYTHON");
    println!("cargo:rerun-if-env-changed=UNHIDRA_TEST_MQTT_URL");
    println!("cargo:rerun-if-env-changed=PATH");
    for gate in GATES {
        println!("cargo:rustc-check-cfg=cfg({})", gate.cfg);
        if (gate.met)() {
            println!("cargo:rustc-cfg={}", gate.cfg);
        } else if used.contains(&gate.cfg) {
            println!("cargo:warning={}", gate.missing);
        }
    }
}

fn non_empty(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Reads the effective uid from `/proc/self/status` (no libc call, so no `unsafe`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .is_some_and(|effective| effective == "0")
    })
}

/// For tests gated on `unhidra_ml`: the ML worker's interpreter from `UNHIDRA_TEST_ML_PYTHON`,
/// which must exist. Panics (failing the test) when it does not: a gated test that runs has
/// been promised it.
pub fn ml_python() -> std::path::PathBuf {
    let python = std::path::PathBuf::from(required("UNHIDRA_TEST_ML_PYTHON"));
    assert!(
        python.exists(),
        "UNHIDRA_TEST_ML_PYTHON={} does not exist",
        python.display()
    );
    python
}

/// For tests gated on `unhidra_mqtt_broker`: the broker's URL from `UNHIDRA_TEST_MQTT_URL`.
pub fn mqtt_url() -> String {
    required("UNHIDRA_TEST_MQTT_URL")
}

fn required(var: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => value,
        #[allow(clippy::panic)]
        _ => panic!("{var} is not set, but this test was built to use it"),
    }
}
