//! The agent's HTTP server: hyper on a tokio runtime of its own thread, so that a slow
//! client or a profile being symbolized never holds up the ring buffer. It reads the latest
//! [`Snapshot`] and nothing else. Every request gets an answer: a bad one a 400 that says
//! what was wrong.
use std::{
    cell::{Cell, RefCell},
    convert::Infallible,
    net::TcpListener,
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{CONTENT_DISPOSITION, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};

use prost::Message as _;

use super::{
    Shared, Snapshot, metrics,
    profiles::{self, Query, Symbols},
    push::{self, PushTarget},
};
use crate::export::Metric;

/// The longest delta profile (`?seconds=N`) served.
const MAX_SECONDS: u64 = 3600;

pub(super) struct Config {
    pub(super) shared: Shared,
    /// `--per-pid N`.
    pub(super) per_pid: Option<usize>,
    /// `--push-url` and `--push-interval`.
    pub(super) push: Option<(PushTarget, Duration)>,
}

/// How the pushes went, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PushCounts {
    pub(super) pushed: u64,
    pub(super) failed: u64,
}

/// Starts serving on `listener`, on a thread of its own, until memprof exits.
pub(super) fn serve(listener: TcpListener, config: Config) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("memprof-http".into())
        .spawn(move || {
            // Local tasks: the symbolizer they share is not Send.
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, accept(listener, config));
        })?;
    Ok(())
}

struct Server {
    config: Config,
    symbols: RefCell<Symbols>,
    pushes: Cell<PushCounts>,
}

async fn accept(listener: TcpListener, config: Config) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return crate::note!("memprof: error: serving HTTP: {e}"),
    };
    let server = Rc::new(Server {
        config,
        symbols: RefCell::default(),
        pushes: Cell::default(),
    });
    if let Some((target, every)) = server.config.push.clone() {
        tokio::task::spawn_local(push_every(server.clone(), target, every));
    }
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                log::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let server = server.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |request| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.answer(request).await) }
            });
            // The timer lets hyper drop a client that sends no request head within 30 s.
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                log::debug!("an HTTP connection ended: {e}");
            }
        });
    }
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut body = body.into();
    body.push('\n');
    response(status, "text/plain; charset=utf-8", body)
}

const INDEX: &str = "memprof agent\n\n\
    /metrics                 Prometheus metrics\n\
    /debug/pprof/            the profiles\n";

const PPROF_INDEX: &str = "<html><head><title>memprof: /debug/pprof/</title></head><body>\n\
    <p>memprof's profiles of the live sites of the traced processes (gzipped pprof):</p>\n\
    <ul>\n\
    <li><a href=\"reserved?debug=1\">reserved</a>: address space mapped, by the stack that mapped it</li>\n\
    <li><a href=\"resident?debug=1\">resident</a>: resident bytes, by the stack that mapped them</li>\n\
    <li><a href=\"faults?debug=1\">faults</a>: page faults, by the stack of the code that faulted (with --fault-stacks)</li>\n\
    </ul>\n\
    <p>Parameters: <code>pid=N</code>, <code>comm=NAME</code>, <code>cgroup=PATH</code> narrow \
    it; <code>seconds=N</code> gives the growth over the next N seconds; <code>debug=1</code> \
    folded stacks as text.</p>\n\
    <p>For example: <code>go tool pprof http://HOST:PORT/debug/pprof/resident</code></p>\n\
    </body></html>\n";

impl Server {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.config
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
            response
                .headers_mut()
                .insert("allow", HeaderValue::from_static("GET"));
            return response;
        }
        let query = request.uri().query().unwrap_or("");
        match request.uri().path() {
            "/" => text(StatusCode::OK, INDEX.trim_end()),
            "/metrics" => match query {
                "" => response(
                    StatusCode::OK,
                    metrics::CONTENT_TYPE,
                    metrics::encode(
                        &self.snapshot(),
                        self.config.per_pid,
                        self.config.push.as_ref().map(|_| self.pushes.get()),
                    ),
                ),
                _ => text(StatusCode::BAD_REQUEST, "/metrics takes no parameters"),
            },
            "/debug/pprof" | "/debug/pprof/" => {
                response(StatusCode::OK, "text/html; charset=utf-8", PPROF_INDEX)
            }
            path => match path.strip_prefix("/debug/pprof/") {
                Some(name) => self.profile(name, query).await,
                None => text(StatusCode::NOT_FOUND, format!("no such page: {path}")),
            },
        }
    }

    async fn profile(&self, name: &str, query: &str) -> Response<Full<Bytes>> {
        let metric = match name {
            "reserved" => Metric::Reserved,
            "resident" => Metric::Resident,
            "faults" => Metric::Faults,
            _ => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("no profile {name}: reserved, resident and faults are served"),
                );
            }
        };
        let query = match parse_query(query) {
            Ok(query) => query,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        };
        let mut now = self.snapshot();
        if metric == Metric::Faults && now.fault_sample == 0 {
            return text(
                StatusCode::NOT_FOUND,
                "no fault stacks: start the agent with --fault-stacks",
            );
        }
        let before = match query.seconds {
            Some(seconds) => {
                let before = now;
                now = self
                    .snapshot_after(before.taken_ns + seconds * 1_000_000_000)
                    .await;
                Some(before)
            }
            None => None,
        };
        let body = profiles::profile(
            &mut self.symbols.borrow_mut(),
            &now,
            before.as_deref(),
            &query,
            metric,
        );
        if query.debug {
            return response(StatusCode::OK, "text/plain; charset=utf-8", body);
        }
        let mut response = response(StatusCode::OK, "application/octet-stream", body);
        let disposition = format!("attachment; filename=\"{name}.pb.gz\"");
        if let Ok(value) = HeaderValue::from_str(&disposition) {
            response.headers_mut().insert(CONTENT_DISPOSITION, value);
        }
        response
    }

    /// The first snapshot taken at `ns` or later (CLOCK_MONOTONIC).
    async fn snapshot_after(&self, ns: u64) -> Arc<Snapshot> {
        let now = crate::events::monotonic_ns();
        tokio::time::sleep(Duration::from_nanos(ns.saturating_sub(now))).await;
        loop {
            let snapshot = self.snapshot();
            if snapshot.taken_ns >= ns {
                return snapshot;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Pushes the latest snapshot's profiles every `every`, on the server's thread, where the
/// symbolizer is; the request itself waits on a blocking thread. A failure is said when
/// pushing stops working and when it works again, not at every try: the agent runs for days.
async fn push_every(server: Rc<Server>, target: PushTarget, every: Duration) {
    let hostname = push::hostname();
    let labels = [("service_name", "memprof"), ("hostname", hostname.as_str())];
    let mut ticker = tokio::time::interval(every);
    // Late ticks are skipped, not made up in a burst.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        let snapshot = server.snapshot();
        let body =
            push::request(&mut server.symbols.borrow_mut(), &snapshot, &labels).encode_to_vec();
        let to = target.clone();
        let outcome = tokio::task::spawn_blocking(move || push::post(&to, &body))
            .await
            .unwrap_or_else(|e| Err(format!("the push's thread failed: {e}")));
        let mut counts = server.pushes.get();
        match outcome {
            Ok(()) => {
                counts.pushed += 1;
                if failing {
                    crate::note!("memprof: pushing profiles to {} again", target.authority);
                }
                failing = false;
            }
            Err(e) => {
                counts.failed += 1;
                if !failing {
                    crate::note!("memprof: warning: pushing profiles failed: {e}");
                }
                failing = true;
            }
        }
        server.pushes.set(counts);
    }
}

/// `%XX` and `+` in a query string's key or value.
fn percent_decode(s: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = rest
                    .get(..2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad %-escape in `{s}`"))?;
                bytes.push(hex);
                rest = &rest[2..];
            }
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("`{s}` is not UTF-8"))
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{key}={value}: not a whole number"))
}

/// A profile's query string (`pid=1&seconds=30&debug=1`).
fn parse_query(query: &str) -> Result<Query, String> {
    let mut parsed = Query::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (percent_decode(key)?, percent_decode(value)?);
        match key.as_str() {
            "pid" => parsed.pid = Some(number(&key, &value)?),
            "comm" => parsed.comm = Some(value),
            "cgroup" => parsed.cgroup = Some(value),
            "seconds" => {
                let seconds: u64 = number(&key, &value)?;
                if !(1..=MAX_SECONDS).contains(&seconds) {
                    return Err(format!("seconds={seconds}: give 1 to {MAX_SECONDS}"));
                }
                parsed.seconds = Some(seconds);
            }
            "debug" => {
                parsed.debug = match value.as_str() {
                    "0" => false,
                    "1" => true,
                    _ => return Err(format!("debug={value}: give 0 or 1")),
                }
            }
            // Go's own parameter, which memprof's profiles do not need.
            "gc" => {}
            _ => {
                return Err(format!(
                    "unknown parameter `{key}`: pid, comm, cgroup, seconds and debug are"
                ));
            }
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_bad_ones_say_why() {
        let query = parse_query("pid=12&comm=nginx%3A&cgroup=%2Fsystem.slice&seconds=5&debug=1");
        assert_eq!(
            query,
            Ok(Query {
                pid: Some(12),
                comm: Some("nginx:".into()),
                cgroup: Some("/system.slice".into()),
                seconds: Some(5),
                debug: true,
            })
        );
        assert_eq!(parse_query(""), Ok(Query::default()));
        for (bad, says) in [
            ("pid=x", "pid=x: not a whole number"),
            ("seconds=0", "give 1 to 3600"),
            ("seconds=99999999999999999999", "not a whole number"),
            ("debug=2", "give 0 or 1"),
            ("comm=%zz", "bad %-escape"),
            ("comm=%", "bad %-escape"),
            ("comm=%ff", "not UTF-8"),
            ("colour=red", "unknown parameter `colour`"),
        ] {
            let error = parse_query(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
