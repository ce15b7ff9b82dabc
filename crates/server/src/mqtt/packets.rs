//! MQTT 3.1.1 and 5 packets, seen through one version-neutral shape.
//!
//! The bytes are read and written by `rumqttc`'s codecs (`mqttbytes::v4` and `v5`); this
//! module only chooses the version from the first CONNECT and translates between those
//! packets and [`Inbound`]/[`Outbound`], the few things the session deals in. Reason codes
//! exist only in MQTT 5; for 3.1.1 clients they become the nearest 3.1.1 code or, where 3.1.1
//! has none, closing the connection (the session decides which).

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::{self as m4, v4};
use rumqttc::v5::mqttbytes::{self as m5, v5};
use tokio_util::codec::{Decoder, Encoder};

/// The protocol a client speaks, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.
    V5,
}

impl Version {
    pub fn label(self) -> &'static str {
        match self {
            Self::V4 => "3.1.1",
            Self::V5 => "5",
        }
    }
}

/// A CONNECT, whichever version sent it.
#[derive(Debug, Clone)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    pub keep_alive_secs: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub will: Option<Will>,
}

/// A Last Will: published for the client if it goes away without a DISCONNECT.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
}

/// What a client sends after CONNECT.
#[derive(Debug)]
pub enum Inbound {
    Connect(Connect),
    Publish {
        topic: String,
        qos: u8,
        pkid: u16,
        retain: bool,
        payload: Bytes,
    },
    PubAck {
        pkid: u16,
    },
    Subscribe {
        pkid: u16,
        filters: Vec<(String, u8)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// `with_will`: an MQTT 5 client asked for its will to be published anyway.
    Disconnect {
        with_will: bool,
    },
    /// A packet of the QoS 2 flow (PUBREC, PUBREL, PUBCOMP): QoS 2 is not offered.
    QosTwo,
    /// A packet this server does not take (AUTH, a second CONNECT, answers only servers
    /// send).
    Unsupported(&'static str),
}

/// How a CONNECT is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnCode {
    Accepted,
    BadCredentials,
    NotAuthorized,
    Unavailable,
    RateLimited,
    BadClientId,
    /// A protocol level other than 4 (3.1.1) or 5.
    BadProtocol,
}

/// Why a QoS 1 publish was not taken (MQTT 5 only; 3.1.1 has no such answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckReason {
    Success,
    NotAuthorized,
    TopicNameInvalid,
    PayloadFormatInvalid,
    QuotaExceeded,
    Unspecified,
}

/// Why the server closes the connection (sent as DISCONNECT to MQTT 5 clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ShuttingDown,
    NotAuthorized,
    Malformed,
    ProtocolError,
    PacketTooLarge,
    KeepAliveTimeout,
    QosNotSupported,
    RetainNotSupported,
    SessionTakenOver,
    AdministrativeAction,
    RateTooHigh,
    ServerBusy,
}

/// What the server sends.
#[derive(Debug)]
pub enum Outbound {
    ConnAck {
        code: ConnCode,
        /// MQTT 5: the keep-alive the server uses when it differs from the client's.
        server_keep_alive: Option<u16>,
        max_packet_bytes: u32,
        reason: Option<String>,
    },
    PubAck {
        pkid: u16,
        reason: AckReason,
        message: Option<String>,
    },
    /// Per filter: the granted QoS, or `None` for refused.
    SubAck {
        pkid: u16,
        granted: Vec<Option<u8>>,
    },
    UnsubAck {
        pkid: u16,
        count: usize,
    },
    Publish {
        topic: String,
        qos: u8,
        pkid: u16,
        payload: Bytes,
    },
    PingResp,
    Disconnect {
        reason: CloseReason,
        message: Option<String>,
    },
}

/// Why bytes from a client could not be read as a packet.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("the first packet must be CONNECT")]
    NotConnect,
    #[error("protocol level {0} is not supported (MQTT 3.1.1 and 5 are)")]
    UnsupportedProtocol(u8),
    #[error("packet larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("could not encode a packet: {0}")]
    Encode(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<m4::Error> for CodecError {
    fn from(err: m4::Error) -> Self {
        match err {
            m4::Error::PayloadSizeLimitExceeded(_) => Self::TooLarge { max: 0 },
            m4::Error::InvalidProtocolLevel(level) => Self::UnsupportedProtocol(level),
            m4::Error::Io(err) => Self::Io(err),
            other => Self::Malformed(other.to_string()),
        }
    }
}

impl From<m5::Error> for CodecError {
    fn from(err: m5::Error) -> Self {
        match err {
            m5::Error::PayloadSizeLimitExceeded { .. } => Self::TooLarge { max: 0 },
            m5::Error::InvalidProtocolLevel(level) => Self::UnsupportedProtocol(level),
            m5::Error::Io(err) => Self::Io(err),
            other => Self::Malformed(other.to_string()),
        }
    }
}

/// Frames MQTT for one connection; the version is unknown until the CONNECT.
#[derive(Debug)]
pub struct Codec {
    version: Option<Version>,
    max_packet_bytes: usize,
}

impl Codec {
    pub fn new(max_packet_bytes: usize) -> Self {
        Self {
            version: None,
            max_packet_bytes,
        }
    }

    pub fn version(&self) -> Option<Version> {
        self.version
    }

    fn too_large(&self, err: CodecError) -> CodecError {
        match err {
            CodecError::TooLarge { .. } => CodecError::TooLarge {
                max: self.max_packet_bytes,
            },
            other => other,
        }
    }

    /// The first packet: a CONNECT of either version.
    fn decode_connect(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        let Some(level) = connect_level(src)? else {
            src.reserve(64);
            return Ok(None);
        };
        match level {
            4 => match v4::Packet::read(src, self.max_packet_bytes) {
                Err(m4::Error::InsufficientBytes(more)) => {
                    src.reserve(more);
                    Ok(None)
                }
                Err(err) => Err(err.into()),
                Ok(v4::Packet::Connect(connect)) => {
                    self.version = Some(Version::V4);
                    Ok(Some(Inbound::Connect(Connect {
                        version: Version::V4,
                        client_id: connect.client_id,
                        keep_alive_secs: connect.keep_alive,
                        username: connect.login.as_ref().map(|l| l.username.clone()),
                        password: connect.login.map(|l| l.password),
                        will: connect.last_will.map(|w| Will {
                            topic: w.topic,
                            payload: w.message,
                        }),
                    })))
                }
                Ok(_) => Err(CodecError::NotConnect),
            },
            5 => {
                let max = u32::try_from(self.max_packet_bytes).unwrap_or(u32::MAX);
                match v5::Packet::read(src, Some(max)) {
                    Err(m5::Error::InsufficientBytes(more)) => {
                        src.reserve(more);
                        Ok(None)
                    }
                    Err(err) => Err(err.into()),
                    Ok(v5::Packet::Connect(connect, will, login)) => {
                        self.version = Some(Version::V5);
                        Ok(Some(Inbound::Connect(Connect {
                            version: Version::V5,
                            client_id: connect.client_id,
                            keep_alive_secs: connect.keep_alive,
                            username: login.as_ref().map(|l| l.username.clone()),
                            password: login.map(|l| l.password),
                            will: will.map(|w| Will {
                                topic: String::from_utf8_lossy(&w.topic).into_owned(),
                                payload: w.message,
                            }),
                        })))
                    }
                    Ok(_) => Err(CodecError::NotConnect),
                }
            }
            other => Err(CodecError::UnsupportedProtocol(other)),
        }
    }
}

/// The protocol level of the CONNECT at the start of `buf` (`None`: not all there yet).
/// Only the fixed header and the protocol name are looked at; the codec reads the rest.
fn connect_level(buf: &[u8]) -> Result<Option<u8>, CodecError> {
    let mut bytes = buf.iter().copied();
    match bytes.next() {
        None => return Ok(None),
        Some(0x10) => {}
        Some(_) => return Err(CodecError::NotConnect),
    }
    // The remaining length: 1 to 4 bytes, 7 bits each.
    let mut header = 1;
    loop {
        match bytes.next() {
            None => return Ok(None),
            Some(b) => {
                header += 1;
                if b & 0x80 == 0 {
                    break;
                }
                if header > 4 {
                    return Err(CodecError::Malformed("bad remaining length".to_owned()));
                }
            }
        }
    }
    let (Some(hi), Some(lo)) = (bytes.next(), bytes.next()) else {
        return Ok(None);
    };
    let name_len = usize::from(u16::from_be_bytes([hi, lo]));
    if name_len > 6 {
        return Err(CodecError::Malformed("unknown protocol name".to_owned()));
    }
    Ok(bytes.nth(name_len))
}

fn qos_number_v4(qos: m4::QoS) -> u8 {
    qos as u8
}

fn qos_number_v5(qos: m5::QoS) -> u8 {
    qos as u8
}

fn from_v4(packet: v4::Packet) -> Inbound {
    match packet {
        v4::Packet::Connect(_) => Inbound::Unsupported("a second CONNECT"),
        v4::Packet::Publish(p) => Inbound::Publish {
            topic: p.topic,
            qos: qos_number_v4(p.qos),
            pkid: p.pkid,
            retain: p.retain,
            payload: p.payload,
        },
        v4::Packet::PubAck(a) => Inbound::PubAck { pkid: a.pkid },
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos_number_v4(f.qos)))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect { with_will: false },
        v4::Packet::PubRec(_) | v4::Packet::PubRel(_) | v4::Packet::PubComp(_) => Inbound::QosTwo,
        v4::Packet::ConnAck(_)
        | v4::Packet::SubAck(_)
        | v4::Packet::UnsubAck(_)
        | v4::Packet::PingResp => Inbound::Unsupported("a packet only servers send"),
    }
}

fn from_v5(packet: v5::Packet) -> Inbound {
    match packet {
        v5::Packet::Connect(..) => Inbound::Unsupported("a second CONNECT"),
        v5::Packet::Publish(p) => {
            if p.properties
                .as_ref()
                .is_some_and(|p| p.topic_alias.is_some())
            {
                // CONNACK allows no topic aliases (Topic Alias Maximum 0).
                return Inbound::Unsupported("topic aliases");
            }
            Inbound::Publish {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                qos: qos_number_v5(p.qos),
                pkid: p.pkid,
                retain: p.retain,
                payload: p.payload,
            }
        }
        v5::Packet::PubAck(a) => Inbound::PubAck { pkid: a.pkid },
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos_number_v5(f.qos)))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        v5::Packet::Auth(_) => Inbound::Unsupported("AUTH (enhanced authentication)"),
        v5::Packet::PubRec(_) | v5::Packet::PubRel(_) | v5::Packet::PubComp(_) => Inbound::QosTwo,
        v5::Packet::ConnAck(_)
        | v5::Packet::SubAck(_)
        | v5::Packet::UnsubAck(_)
        | v5::Packet::PingResp(_) => Inbound::Unsupported("a packet only servers send"),
    }
}

impl Decoder for Codec {
    type Item = Inbound;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        if src.is_empty() {
            return Ok(None);
        }
        let decoded = match self.version {
            None => self.decode_connect(src),
            Some(Version::V4) => match v4::Packet::read(src, self.max_packet_bytes) {
                Ok(packet) => Ok(Some(from_v4(packet))),
                Err(m4::Error::InsufficientBytes(more)) => {
                    src.reserve(more);
                    Ok(None)
                }
                Err(err) => Err(err.into()),
            },
            Some(Version::V5) => {
                // A DISCONNECT with no reason code (remaining length 0) is valid MQTT 5,
                // but the codec wants a payload.
                if src.get(0..2) == Some(&[0xE0, 0x00][..]) {
                    src.advance(2);
                    return Ok(Some(Inbound::Disconnect { with_will: false }));
                }
                let max = u32::try_from(self.max_packet_bytes).unwrap_or(u32::MAX);
                match v5::Packet::read(src, Some(max)) {
                    Ok(packet) => Ok(Some(from_v5(packet))),
                    Err(m5::Error::InsufficientBytes(more)) => {
                        src.reserve(more);
                        Ok(None)
                    }
                    Err(err) => Err(err.into()),
                }
            }
        };
        decoded.map_err(|err| self.too_large(err))
    }
}

fn qos_v4(qos: u8) -> m4::QoS {
    if qos == 0 {
        m4::QoS::AtMostOnce
    } else {
        m4::QoS::AtLeastOnce
    }
}

fn qos_v5(qos: u8) -> m5::QoS {
    if qos == 0 {
        m5::QoS::AtMostOnce
    } else {
        m5::QoS::AtLeastOnce
    }
}

fn to_v4(item: Outbound) -> Option<v4::Packet> {
    Some(match item {
        Outbound::ConnAck { code, .. } => v4::Packet::ConnAck(v4::ConnAck::new(
            match code {
                ConnCode::Accepted => v4::ConnectReturnCode::Success,
                ConnCode::BadCredentials => v4::ConnectReturnCode::BadUserNamePassword,
                ConnCode::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
                ConnCode::Unavailable | ConnCode::RateLimited => {
                    v4::ConnectReturnCode::ServiceUnavailable
                }
                ConnCode::BadClientId => v4::ConnectReturnCode::BadClientId,
                ConnCode::BadProtocol => v4::ConnectReturnCode::RefusedProtocolVersion,
            },
            false,
        )),
        Outbound::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck::new(pkid)),
        Outbound::SubAck { pkid, granted } => v4::Packet::SubAck(v4::SubAck::new(
            pkid,
            granted
                .into_iter()
                .map(|g| match g {
                    Some(qos) => v4::SubscribeReasonCode::Success(qos_v4(qos)),
                    None => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Outbound::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)),
        Outbound::Publish {
            topic,
            qos,
            pkid,
            payload,
        } => {
            let mut publish = v4::Publish::from_bytes(topic, qos_v4(qos), payload);
            publish.pkid = pkid;
            v4::Packet::Publish(publish)
        }
        Outbound::PingResp => v4::Packet::PingResp,
        // 3.1.1 servers do not send DISCONNECT: they close the connection.
        Outbound::Disconnect { .. } => return None,
    })
}

/// Longest reason string sent, in bytes. Reasons may quote what a client sent; an MQTT string
/// holds at most 65,535 bytes (rumqttc wraps a longer one's length prefix, corrupting the
/// stream), and a reason is for people: the start says enough.
pub const MAX_REASON_BYTES: usize = 256;

fn clip_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES - '…'.len_utf8();
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

fn to_v5(item: Outbound) -> v5::Packet {
    match item {
        Outbound::ConnAck {
            code,
            server_keep_alive,
            max_packet_bytes,
            reason,
        } => v5::Packet::ConnAck(v5::ConnAck {
            session_present: false,
            code: match code {
                ConnCode::Accepted => v5::ConnectReturnCode::Success,
                ConnCode::BadCredentials => v5::ConnectReturnCode::BadUserNamePassword,
                ConnCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
                ConnCode::Unavailable => v5::ConnectReturnCode::ServerUnavailable,
                ConnCode::RateLimited => v5::ConnectReturnCode::ConnectionRateExceeded,
                ConnCode::BadClientId => v5::ConnectReturnCode::ClientIdentifierNotValid,
                ConnCode::BadProtocol => v5::ConnectReturnCode::UnsupportedProtocolVersion,
            },
            properties: Some(v5::ConnAckProperties {
                session_expiry_interval: None,
                receive_max: None,
                max_qos: Some(1),
                retain_available: Some(0),
                max_packet_size: Some(max_packet_bytes),
                assigned_client_identifier: None,
                topic_alias_max: Some(0),
                reason_string: reason.map(clip_reason),
                user_properties: Vec::new(),
                wildcard_subscription_available: Some(0),
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(0),
                server_keep_alive,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            }),
        }),
        Outbound::PubAck {
            pkid,
            reason,
            message,
        } => {
            let mut ack = v5::PubAck::new(
                pkid,
                message.map(|m| v5::PubAckProperties {
                    reason_string: Some(clip_reason(m)),
                    user_properties: Vec::new(),
                }),
            );
            ack.reason = match reason {
                AckReason::Success => v5::PubAckReason::Success,
                AckReason::NotAuthorized => v5::PubAckReason::NotAuthorized,
                AckReason::TopicNameInvalid => v5::PubAckReason::TopicNameInvalid,
                AckReason::PayloadFormatInvalid => v5::PubAckReason::PayloadFormatInvalid,
                AckReason::QuotaExceeded => v5::PubAckReason::QuotaExceeded,
                AckReason::Unspecified => v5::PubAckReason::UnspecifiedError,
            };
            v5::Packet::PubAck(ack)
        }
        Outbound::SubAck { pkid, granted } => v5::Packet::SubAck(v5::SubAck {
            pkid,
            return_codes: granted
                .into_iter()
                .map(|g| match g {
                    Some(qos) => v5::SubscribeReasonCode::Success(qos_v5(qos)),
                    None => v5::SubscribeReasonCode::NotAuthorized,
                })
                .collect(),
            properties: None,
        }),
        Outbound::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid,
            reasons: vec![v5::UnsubAckReason::Success; count],
            properties: None,
        }),
        Outbound::Publish {
            topic,
            qos,
            pkid,
            payload,
        } => {
            let mut publish = v5::Publish::new(topic, qos_v5(qos), payload, None);
            publish.pkid = pkid;
            v5::Packet::Publish(publish)
        }
        Outbound::PingResp => v5::Packet::PingResp(v5::PingResp),
        Outbound::Disconnect { reason, message } => v5::Packet::Disconnect(v5::Disconnect {
            reason_code: match reason {
                CloseReason::ShuttingDown => v5::DisconnectReasonCode::ServerShuttingDown,
                CloseReason::NotAuthorized => v5::DisconnectReasonCode::NotAuthorized,
                CloseReason::Malformed => v5::DisconnectReasonCode::MalformedPacket,
                CloseReason::ProtocolError => v5::DisconnectReasonCode::ProtocolError,
                CloseReason::PacketTooLarge => v5::DisconnectReasonCode::PacketTooLarge,
                CloseReason::KeepAliveTimeout => v5::DisconnectReasonCode::KeepAliveTimeout,
                CloseReason::QosNotSupported => v5::DisconnectReasonCode::QoSNotSupported,
                CloseReason::RetainNotSupported => v5::DisconnectReasonCode::RetainNotSupported,
                CloseReason::SessionTakenOver => v5::DisconnectReasonCode::SessionTakenOver,
                CloseReason::AdministrativeAction => v5::DisconnectReasonCode::AdministrativeAction,
                CloseReason::RateTooHigh => v5::DisconnectReasonCode::MessageRateTooHigh,
                CloseReason::ServerBusy => v5::DisconnectReasonCode::ServerBusy,
            },
            properties: message.map(|m| v5::DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some(clip_reason(m)),
                user_properties: Vec::new(),
                server_reference: None,
            }),
        }),
    }
}

impl Encoder<Outbound> for Codec {
    type Error = CodecError;

    fn encode(&mut self, item: Outbound, dst: &mut BytesMut) -> Result<(), CodecError> {
        // Before a CONNECT was understood (a refused protocol level), answer as 3.1.1.
        match self.version.unwrap_or(Version::V4) {
            Version::V4 => {
                if let Some(packet) = to_v4(item) {
                    packet
                        .write(dst, usize::MAX)
                        .map_err(|err| CodecError::Encode(err.to_string()))?;
                }
            }
            Version::V5 => {
                to_v5(item)
                    .write(dst, None)
                    .map_err(|err| CodecError::Encode(err.to_string()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_clipped_on_a_character_boundary() {
        assert_eq!(clip_reason("short".to_owned()), "short");
        let long = "é".repeat(40_000);
        let clipped = clip_reason(long);
        assert!(clipped.len() <= MAX_REASON_BYTES, "{}", clipped.len());
        assert!(clipped.ends_with('…'));
        assert!(clipped.trim_end_matches('…').chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_v5_puback_with_a_huge_reason_is_still_one_whole_packet() {
        let mut codec = Codec::new(1 << 20);
        codec.version = Some(Version::V5);
        let mut out = BytesMut::new();
        let ack = Outbound::PubAck {
            pkid: 7,
            reason: AckReason::PayloadFormatInvalid,
            message: Some("x".repeat(70_000)),
        };
        codec.encode(ack, &mut out).unwrap();
        codec.encode(Outbound::PingResp, &mut out).unwrap();
        match v5::Packet::read(&mut out, None).unwrap() {
            v5::Packet::PubAck(ack) => assert_eq!(ack.pkid, 7),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            v5::Packet::read(&mut out, None),
            Ok(v5::Packet::PingResp(_))
        ));
        assert!(out.is_empty());
    }
}
