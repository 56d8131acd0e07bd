//! `--push-url`: the profiles of the live sites pushed to Grafana Pyroscope every
//! `--push-interval`, through its push API: `POST /push.v1.PusherService/Push` in Connect's
//! unary protocol, a protobuf `PushRequest` as the body (`Content-Type: application/proto`).
//! Each profile (reserved, resident, and faults with `--fault-stacks`) is a series of its
//! own, raw gzipped pprof labelled `__name__="memprof"`, `service_name` and `hostname`;
//! Pyroscope names it by its sample type (`memprof:reserved:bytes:space:bytes`).
use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    time::Duration,
};

use super::{
    Snapshot,
    profiles::{self, Query, Symbols},
};
use crate::export::Metric;

/// Pyroscope's push API, as `api/push/v1/push.proto` declares it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawSample {
    /// A pprof profile, gzipped or not.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    #[prost(string, tag = "2")]
    pub id: String,
}

/// The path of the push method, after the URL's own.
const PUSH_PATH: &str = "/push.v1.PusherService/Push";
/// The `__name__` of every series pushed.
pub(crate) const PROFILE_NAME: &str = "memprof";

/// Where to push: an `http://` URL's parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushTarget {
    /// `host:port` as the URL gave it (the Host header).
    pub authority: String,
    pub port: u16,
    pub host: String,
    /// The URL's path (Pyroscope behind a prefix) and the push method's.
    pub path: String,
}

impl PushTarget {
    /// `http://HOST[:PORT][/PREFIX]`; https needs TLS, which memprof does not speak.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            "give an http:// URL (https is not supported: put a proxy that adds TLS in front)"
                .to_string()
        })?;
        let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() || authority.contains('@') {
            return Err("give http://HOST[:PORT][/PATH]".to_string());
        }
        // An IPv6 address is in brackets; its colons are not the port's.
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                let port = port
                    .parse()
                    .map_err(|_| format!("`{port}` is not a port"))?;
                (host, port)
            }
            _ => (authority, 80),
        };
        Ok(Self {
            authority: authority.to_string(),
            port,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            path: format!("{}{PUSH_PATH}", prefix.trim_end_matches('/')),
        })
    }
}

/// This host's name, for the `hostname` label ("" when the kernel does not say).
pub(super) fn hostname() -> String {
    let mut name = [0u8; 256];
    // SAFETY: the buffer is writable for its length, which is passed.
    let ok = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } == 0;
    let len = name.iter().position(|&b| b == 0).unwrap_or(0);
    if ok {
        String::from_utf8_lossy(&name[..len]).into_owned()
    } else {
        String::new()
    }
}

/// The request that pushes `snapshot`'s profiles, with the labels of every series.
pub(super) fn request(
    symbols: &mut Symbols,
    snapshot: &Snapshot,
    labels: &[(&str, &str)],
) -> PushRequest {
    let mut metrics = vec![Metric::Reserved, Metric::Resident];
    if snapshot.fault_sample != 0 {
        metrics.push(Metric::Faults);
    }
    let series = metrics
        .into_iter()
        .map(|metric| RawProfileSeries {
            labels: [("__name__", PROFILE_NAME)]
                .iter()
                .chain(labels)
                .map(|&(name, value)| LabelPair {
                    name: name.into(),
                    value: value.into(),
                })
                .collect(),
            samples: vec![RawSample {
                raw_profile: profiles::profile(symbols, snapshot, None, &Query::default(), metric),
                id: String::new(),
            }],
        })
        .collect();
    PushRequest { series }
}

/// POSTs `body` (an encoded [`PushRequest`]) to `target`: blocking, with timeouts, so that
/// it runs on a thread that may wait.
pub(super) fn post(target: &PushTarget, body: &[u8]) -> Result<(), String> {
    let timeout = Duration::from_secs(10);
    // Every address the name has, in turn: `localhost` may give ::1 first to a server on
    // 127.0.0.1.
    let mut failed = format!("{}: no address", target.authority);
    let mut stream = None;
    for address in (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", target.authority))?
    {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(e) => failed = format!("connecting to {} ({address}): {e}", target.authority),
        }
    }
    let mut stream = stream.ok_or(failed)?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/proto\r\n\
         Connect-Protocol-Version: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.authority,
        body.len()
    );
    let mut answer = Vec::new();
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .and_then(|()| stream.read_to_end(&mut answer))
        .map_err(|e| format!("pushing to {}: {e}", target.authority))?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).unwrap_or("");
    if status.starts_with('2') {
        return Ok(());
    }
    // Connect's errors are JSON in the body: say it, shortened.
    let said = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .chars()
        .take(300)
        .collect::<String>();
    Err(format!(
        "{}{}: {} {said}",
        target.authority,
        target.path,
        answer.lines().next().unwrap_or("no answer")
    ))
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn urls_are_parsed_and_bad_ones_refused() {
        let target = |host: &str, port, path: &str, authority: &str| PushTarget {
            authority: authority.into(),
            port,
            host: host.into(),
            path: path.into(),
        };
        assert_eq!(
            PushTarget::parse("http://127.0.0.1:4040"),
            Ok(target(
                "127.0.0.1",
                4040,
                "/push.v1.PusherService/Push",
                "127.0.0.1:4040"
            ))
        );
        assert_eq!(
            PushTarget::parse("http://pyroscope/prefix/"),
            Ok(target(
                "pyroscope",
                80,
                "/prefix/push.v1.PusherService/Push",
                "pyroscope"
            ))
        );
        assert_eq!(
            PushTarget::parse("http://[::1]:4040"),
            Ok(target(
                "::1",
                4040,
                "/push.v1.PusherService/Push",
                "[::1]:4040"
            ))
        );
        assert_eq!(
            PushTarget::parse("http://[::1]").map(|t| (t.host, t.port)),
            Ok(("::1".to_string(), 80))
        );
        for (bad, says) in [
            ("https://x", "https is not supported"),
            ("x:4040", "give an http:// URL"),
            ("http://", "give http://HOST"),
            ("http://u:p@x", "give http://HOST"),
            ("http://x:port", "`port` is not a port"),
        ] {
            let error = PushTarget::parse(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn a_push_has_a_series_per_profile_with_its_labels() {
        let snapshot = Snapshot::default();
        let request = request(
            &mut Symbols::default(),
            &snapshot,
            &[("service_name", "memprof"), ("hostname", "h")],
        );
        let decoded = PushRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.series.len(), 2);
        let names: Vec<Vec<(&str, &str)>> = decoded
            .series
            .iter()
            .map(|s| {
                s.labels
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .collect()
            })
            .collect();
        assert_eq!(
            names[0],
            [
                ("__name__", "memprof"),
                ("service_name", "memprof"),
                ("hostname", "h")
            ]
        );
        // Gzipped pprof.
        assert!(
            decoded.series[1].samples[0]
                .raw_profile
                .starts_with(&[0x1f, 0x8b])
        );
    }
}
