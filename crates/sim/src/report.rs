//! What a run did, summed over its devices.

use serde::Serialize;
use unhidra_device_core::Stats;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub devices: u64,
    pub connect_attempts: u64,
    pub welcomes: u64,
    pub disconnects: u64,
    pub refused: u64,
    pub dead_peers: u64,
    pub reboots: u64,
    pub telemetry_sent: u64,
    /// MQTT only: telemetry publishes (QoS 1) the server acknowledged, i.e. stored. The
    /// WebSocket protocol has no acks for telemetry; there it stays 0.
    pub telemetry_acked: u64,
    pub telemetry_dropped: u64,
    pub telemetry_expired: u64,
    pub anomalies_injected: u64,
    pub heartbeats: u64,
    pub commands_run: u64,
    pub commands_replayed: u64,
    pub commands_unknown: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub malformed: u64,
    pub server_errors: u64,
    pub overloaded: u64,
}

impl Report {
    /// Adds one device core's counters (a device that reboots has several cores).
    pub fn add_core(&mut self, s: &Stats) {
        self.connect_attempts += s.connect_attempts;
        self.welcomes += s.welcomes;
        self.disconnects += s.disconnects;
        self.refused += s.refused;
        self.dead_peers += s.dead_peers;
        self.telemetry_sent += s.telemetry_sent;
        self.telemetry_dropped += s.telemetry_dropped;
        self.telemetry_expired += s.telemetry_expired;
        self.heartbeats += s.heartbeats;
        self.commands_run += s.commands_run;
        self.commands_replayed += s.commands_replayed;
        self.commands_unknown += s.commands_unknown;
        self.frames_in += s.frames_in;
        self.frames_out += s.frames_out;
        self.malformed += s.malformed;
        self.server_errors += s.errors;
        self.overloaded += s.overloaded;
    }

    pub fn merge(&mut self, o: &Report) {
        self.devices += o.devices;
        self.reboots += o.reboots;
        self.anomalies_injected += o.anomalies_injected;
        self.connect_attempts += o.connect_attempts;
        self.welcomes += o.welcomes;
        self.disconnects += o.disconnects;
        self.refused += o.refused;
        self.dead_peers += o.dead_peers;
        self.telemetry_sent += o.telemetry_sent;
        self.telemetry_acked += o.telemetry_acked;
        self.telemetry_dropped += o.telemetry_dropped;
        self.telemetry_expired += o.telemetry_expired;
        self.heartbeats += o.heartbeats;
        self.commands_run += o.commands_run;
        self.commands_replayed += o.commands_replayed;
        self.commands_unknown += o.commands_unknown;
        self.frames_in += o.frames_in;
        self.frames_out += o.frames_out;
        self.malformed += o.malformed;
        self.server_errors += o.server_errors;
        self.overloaded += o.overloaded;
    }
}
