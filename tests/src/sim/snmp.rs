//! Thousands of virtual SNMP v2c agents on a few UDP sockets on 127.0.0.1: each device is a
//! community string on one of the sockets (`snmp://<community>@127.0.0.1:<port>`), answering
//! GET, GETNEXT and GETBULK from a [`Recording`], with a per-device [`Behaviour`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_snmp::compatibility::DecodeConfig;
use async_snmp::message::CommunityMessage;
use async_snmp::pdu::{PduBody, PduType, StandardPduType};
use async_snmp::{Pdu, Value, VarBind};
use bytes::Bytes;
use tokio::net::UdpSocket;

use super::Behaviour;
use super::snmprec::Recording;

/// The system group prefix: a GET under it starts a poll (the driver's first request).
const SYSTEM: [u32; 8] = [1, 3, 6, 1, 2, 1, 1, 0];
/// Most varbinds in one GETBULK answer.
const MAX_BULK_VARBINDS: usize = 128;

/// One simulated device.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Community and device name (`{device}` in the recording).
    pub name: String,
    pub recording: Arc<Recording>,
    pub behaviour: Behaviour,
}

#[derive(Debug)]
struct Device {
    spec: DeviceSpec,
    socket: usize,
    requests: AtomicU64,
    polls: AtomicU64,
    /// (request id, client port) of the last poll-starting GET: a retry repeats both, a new
    /// poll (new client socket) does not.
    last_poll: AtomicU64,
    /// When the last poll started, in ms since the fleet started (`u64::MAX`: none yet).
    last_poll_ms: AtomicU64,
}

/// A running fleet; dropping it stops every socket task.
#[derive(Debug)]
pub struct SnmpFleet {
    addrs: Vec<SocketAddr>,
    devices: Arc<Vec<Device>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    gaps: Arc<Mutex<Vec<u32>>>,
}

impl Drop for SnmpFleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SnmpFleet {
    /// Binds `sockets` UDP sockets on 127.0.0.1 (free ports) and spreads `devices` over them.
    ///
    /// # Errors
    /// Binding a socket failed.
    pub async fn start(sockets: usize, devices: Vec<DeviceSpec>) -> std::io::Result<Self> {
        let sockets = sockets.max(1);
        let mut socks = Vec::with_capacity(sockets);
        for _ in 0..sockets {
            socks.push(Arc::new(UdpSocket::bind("127.0.0.1:0").await?));
        }
        let addrs = socks
            .iter()
            .map(|s| s.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        let devices: Arc<Vec<Device>> = Arc::new(
            devices
                .into_iter()
                .enumerate()
                .map(|(i, spec)| Device {
                    spec,
                    socket: i % sockets,
                    requests: AtomicU64::new(0),
                    polls: AtomicU64::new(0),
                    last_poll: AtomicU64::new(u64::MAX),
                    last_poll_ms: AtomicU64::new(u64::MAX),
                })
                .collect(),
        );
        let mut by_community: HashMap<Vec<u8>, usize> = HashMap::new();
        for (i, d) in devices.iter().enumerate() {
            by_community.insert(d.spec.name.as_bytes().to_vec(), i);
        }
        let by_community = Arc::new(by_community);
        let gaps = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let tasks = socks
            .into_iter()
            .enumerate()
            .map(|(k, sock)| {
                let cx = ServeCx {
                    k,
                    devices: Arc::clone(&devices),
                    by_community: Arc::clone(&by_community),
                    gaps: Arc::clone(&gaps),
                    started,
                };
                tokio::spawn(serve(sock, cx))
            })
            .collect();
        Ok(Self {
            addrs,
            devices,
            tasks,
            gaps,
        })
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The agent target URL of device `i` (community inline; fine for a test).
    #[must_use]
    pub fn url(&self, i: usize) -> String {
        let d = &self.devices[i];
        format!("snmp://{}@{}", d.spec.name, self.addrs[d.socket])
    }

    #[must_use]
    pub fn name(&self, i: usize) -> &str {
        &self.devices[i].spec.name
    }

    #[must_use]
    pub fn behaviour(&self, i: usize) -> &Behaviour {
        &self.devices[i].spec.behaviour
    }

    /// Polls started on device `i` (distinct system-group GETs; retries not counted).
    #[must_use]
    pub fn polls(&self, i: usize) -> u64 {
        self.devices[i].polls.load(Ordering::Relaxed)
    }

    /// Every gap between two consecutive poll starts on one device, in ms (for jitter figures).
    #[must_use]
    pub fn poll_gaps_ms(&self) -> Vec<u32> {
        self.gaps.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Requests received for device `i` (answered or not).
    #[must_use]
    pub fn requests(&self, i: usize) -> u64 {
        self.devices[i].requests.load(Ordering::Relaxed)
    }
}

struct ServeCx {
    k: usize,
    devices: Arc<Vec<Device>>,
    by_community: Arc<HashMap<Vec<u8>, usize>>,
    gaps: Arc<Mutex<Vec<u32>>>,
    started: Instant,
}

async fn serve(sock: Arc<UdpSocket>, cx: ServeCx) {
    let ServeCx {
        k,
        devices,
        by_community,
        gaps,
        started,
    } = cx;
    let mut buf = vec![0u8; 65_536];
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15 ^ (k as u64);
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(msg) = CommunityMessage::decode(Bytes::copy_from_slice(&buf[..n]), DecodeConfig::default())
        else {
            continue;
        };
        let Some(&i) = by_community.get(msg.value.community().as_bytes()) else {
            continue; // unknown community: silence, as net-snmp does
        };
        let d = &devices[i];
        if d.socket != k {
            continue;
        }
        d.requests.fetch_add(1, Ordering::Relaxed);
        let Some(pdu) = msg.value.into_pdu() else {
            continue;
        };
        let (rid, body, varbinds) = pdu.into_raw_parts();
        if matches!(
            body,
            PduBody::Standard {
                pdu_type: StandardPduType::GetRequest,
                ..
            }
        ) && varbinds
            .first()
            .is_some_and(|v| v.oid.arcs().starts_with(&SYSTEM[..7]))
            && d.last_poll.swap(poll_key(rid, peer), Ordering::Relaxed) != poll_key(rid, peer)
        {
            d.polls.fetch_add(1, Ordering::Relaxed);
            let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let last = d.last_poll_ms.swap(now, Ordering::Relaxed);
            if last != u64::MAX
                && let Ok(mut g) = gaps.lock()
            {
                g.push(u32::try_from(now.saturating_sub(last)).unwrap_or(u32::MAX));
            }
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let (delay, reply_rid, truncate) = match &d.spec.behaviour {
            // The HTTP misbehaviours have no SNMP meaning: answered normally.
            Behaviour::Normal | Behaviour::Slowloris | Behaviour::HugeBody | Behaviour::HttpStatus(_) => {
                (Duration::ZERO, rid, false)
            }
            Behaviour::BlackHole => continue,
            Behaviour::Latency(l) => (*l, rid, false),
            Behaviour::Lossy { permille } => {
                if rng % 1000 < u64::from(*permille) {
                    continue;
                }
                (Duration::ZERO, rid, false)
            }
            Behaviour::Truncate => (Duration::ZERO, rid, true),
            Behaviour::WrongRequestId => (Duration::ZERO, rid.wrapping_add(1), false),
            Behaviour::Garbage => {
                let n = 1 + usize::try_from(rng % 600).unwrap_or(0);
                let junk = super::garbage(&mut rng, n);
                let _ = sock.send_to(&junk, peer).await;
                continue;
            }
        };
        let out = respond(&d.spec, &body, &varbinds);
        let pdu = Pdu::from_raw_parts(
            reply_rid,
            PduBody::Standard {
                pdu_type: StandardPduType::Response,
                error_status: 0,
                error_index: 0,
            },
            out,
        );
        let Ok(bytes) = CommunityMessage::v2c(d.spec.name.as_str(), pdu).and_then(|m| m.encode()) else {
            continue;
        };
        let bytes = if truncate {
            bytes.slice(..bytes.len() / 2)
        } else {
            bytes
        };
        if delay.is_zero() {
            let _ = sock.send_to(&bytes, peer).await;
        } else {
            let sock = Arc::clone(&sock);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = sock.send_to(&bytes, peer).await;
            });
        }
    }
}

fn poll_key(rid: i32, peer: SocketAddr) -> u64 {
    (u64::from(rid.cast_unsigned()) << 16) | u64::from(peer.port())
}

fn respond(spec: &DeviceSpec, body: &PduBody, varbinds: &[VarBind]) -> Vec<VarBind> {
    let rec = &spec.recording;
    let next = |oid: &[u32]| -> VarBind {
        match rec.next(oid) {
            Some(o) => VarBind::new(
                async_snmp::Oid::new(o.oid.iter().copied()),
                rec.live(o, &spec.name),
            ),
            None => VarBind::new(async_snmp::Oid::new(oid.iter().copied()), Value::EndOfMibView),
        }
    };
    match body {
        PduBody::Standard {
            pdu_type: StandardPduType::GetRequest,
            ..
        } => varbinds
            .iter()
            .map(|v| {
                let oid = v.oid.arcs();
                let value = match rec.get(oid) {
                    Some(o) => rec.live(o, &spec.name),
                    None if oid.len() > 1 && rec.has_subtree(&oid[..oid.len() - 1]) => Value::NoSuchInstance,
                    None => Value::NoSuchObject,
                };
                VarBind::new(v.oid.clone(), value)
            })
            .collect(),
        PduBody::Standard {
            pdu_type: StandardPduType::GetNextRequest,
            ..
        } => varbinds.iter().map(|v| next(v.oid.arcs())).collect(),
        PduBody::GetBulk {
            non_repeaters,
            max_repetitions,
        } => {
            let nr = (*non_repeaters as usize).min(varbinds.len());
            let mut out: Vec<VarBind> = varbinds[..nr].iter().map(|v| next(v.oid.arcs())).collect();
            let mut cursors: Vec<Vec<u32>> = varbinds[nr..].iter().map(|v| v.oid.arcs().to_vec()).collect();
            'rep: for _ in 0..*max_repetitions {
                let mut all_end = true;
                for c in &mut cursors {
                    if out.len() >= MAX_BULK_VARBINDS {
                        break 'rep;
                    }
                    let vb = next(c);
                    if vb.value != Value::EndOfMibView {
                        all_end = false;
                    }
                    *c = vb.oid.arcs().to_vec();
                    out.push(vb);
                }
                if all_end || cursors.is_empty() {
                    break;
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// PDU types the simulator answers (for documentation and the unit test).
#[must_use]
pub fn answers(t: PduType) -> bool {
    matches!(
        t,
        PduType::GetRequest | PduType::GetNextRequest | PduType::GetBulkRequest
    )
}
