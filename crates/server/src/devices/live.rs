//! Devices that are connected now, and what they last reported. Owners are told of every
//! change on their own topic; what a device reported is written to the store in one
//! transaction every few seconds (and at shutdown), so ten thousand devices heartbeating
//! cost one commit per interval, not one each.

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;
use unhidra_proto::devices::DeviceState;
use unhidra_store::DeviceSeen;

#[derive(Debug, Clone)]
struct Live {
    owner_id: String,
    connections: usize,
    state: DeviceState,
    /// Changed since the last write to the store.
    dirty: bool,
}

/// Connected devices by id.
#[derive(Default)]
pub struct LiveDevices {
    devices: Mutex<HashMap<String, Live>>,
}

/// What a heartbeat reports.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub firmware_version: Option<String>,
    pub free_memory: Option<u64>,
    pub uptime_secs: Option<u64>,
}

impl LiveDevices {
    fn devices(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.devices
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A connection of the device opened; returns its state now, and whether it was offline
    /// before (no other connection).
    pub fn connect(
        &self,
        device_id: &str,
        owner_id: &str,
        now: OffsetDateTime,
    ) -> (DeviceState, bool) {
        let mut devices = self.devices();
        let live = devices.entry(device_id.to_owned()).or_insert_with(|| Live {
            owner_id: owner_id.to_owned(),
            connections: 0,
            state: DeviceState::default(),
            dirty: false,
        });
        live.connections += 1;
        live.state.online = true;
        live.state.last_seen_at = Some(now);
        live.dirty = true;
        (live.state.clone(), live.connections == 1)
    }

    /// A heartbeat; returns the device's state now (`None` if it is not connected).
    pub fn heartbeat(
        &self,
        device_id: &str,
        beat: Heartbeat,
        now: OffsetDateTime,
    ) -> Option<DeviceState> {
        let mut devices = self.devices();
        let live = devices.get_mut(device_id)?;
        live.state.last_seen_at = Some(now);
        if beat.firmware_version.is_some() {
            live.state.firmware_version = beat.firmware_version;
        }
        if beat.free_memory.is_some() {
            live.state.free_memory = beat.free_memory;
        }
        live.state.uptime_secs = beat.uptime_secs;
        live.dirty = true;
        Some(live.state.clone())
    }

    /// A connection closed; returns the state now (offline when it was the last one).
    pub fn disconnect(&self, device_id: &str, now: OffsetDateTime) -> Option<DeviceState> {
        let mut devices = self.devices();
        let live = devices.get_mut(device_id)?;
        live.connections = live.connections.saturating_sub(1);
        live.state.last_seen_at = Some(now);
        live.dirty = true;
        if live.connections == 0 {
            live.state.online = false;
            live.state.uptime_secs = None;
        }
        Some(live.state.clone())
    }

    /// The device's live state, if it has been connected since the server started.
    pub fn state(&self, device_id: &str) -> Option<DeviceState> {
        self.devices().get(device_id).map(|l| l.state.clone())
    }

    /// The owner of a device that has been connected since the server started.
    pub fn owner(&self, device_id: &str) -> Option<String> {
        self.devices().get(device_id).map(|l| l.owner_id.clone())
    }

    /// Takes what changed since the last call, to be written to the store; forgets devices
    /// that are offline and written.
    pub fn take_dirty(&self) -> Vec<(String, DeviceSeen)> {
        let mut devices = self.devices();
        let mut out = Vec::new();
        for (id, live) in devices.iter_mut() {
            if live.dirty {
                live.dirty = false;
                if let Some(at) = live.state.last_seen_at {
                    out.push((
                        id.clone(),
                        DeviceSeen {
                            at,
                            firmware_version: live.state.firmware_version.clone(),
                            free_memory: live.state.free_memory,
                        },
                    ));
                }
            }
        }
        devices.retain(|_, live| live.connections > 0 || live.dirty);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_connections_and_heartbeats() {
        let live = LiveDevices::default();
        let t = OffsetDateTime::UNIX_EPOCH;
        assert!(live.state("d").is_none());
        assert!(live.connect("d", "owner", t).1, "first connection");
        let (state, first) = live.connect("d", "owner", t);
        assert!(state.online && !first);
        let beat = Heartbeat {
            firmware_version: Some("1.0".into()),
            free_memory: Some(1000),
            uptime_secs: Some(5),
        };
        let s = live.heartbeat("d", beat, t).unwrap();
        assert_eq!(
            (s.firmware_version.as_deref(), s.free_memory),
            (Some("1.0"), Some(1000))
        );
        assert!(
            live.disconnect("d", t).unwrap().online,
            "one connection left"
        );
        let s = live.disconnect("d", t).unwrap();
        assert!(!s.online);
        assert_eq!(
            s.firmware_version.as_deref(),
            Some("1.0"),
            "kept while offline"
        );
        assert_eq!(live.owner("d").as_deref(), Some("owner"));

        let dirty = live.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert_eq!(dirty[0].1.firmware_version.as_deref(), Some("1.0"));
        assert!(live.take_dirty().is_empty(), "written once");
        assert!(live.state("d").is_none(), "offline and written: forgotten");
        assert!(live.heartbeat("gone", Heartbeat::default(), t).is_none());
    }
}
