//! One request's context: made once at the edge and passed down the request path, so that
//! nothing recomputes the client address, the route or the decision, and the access log and
//! the metrics read the same facts.

pub mod id;
pub mod route;

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use crate::identity::Identity;
use crate::metrics;
use crate::token::VideoUid;

/// What authorization decided about a request: one vocabulary for the access log and the
/// `streamgate_decisions_total{outcome}` metric.
pub type Decision = metrics::Outcome;

/// The facts about one request, filled in as it goes down the path.
#[derive(Debug)]
pub struct Context {
    /// The request id (the client's when sane, else ours); returned in `X-Request-Id`.
    pub id: HeaderValue,
    /// When the request arrived, by the system clock: the time its policy decision, cached
    /// token and audit event are judged and stamped by, and its access line is stamped from
    /// (each read of the clock cost about as much as a log field).
    pub arrived: SystemTime,
    /// The socket peer.
    pub peer: SocketAddr,
    /// The viewer's address: the peer, or what a trusted hop vouches for. Computed once.
    pub client: IpAddr,
    /// The route's metrics label, from the one router.
    pub label: metrics::Route,
    /// Who is asking: anonymous until a handler identifies the caller.
    pub identity: Identity,
    /// What authorization decided, when it ran.
    pub verdict: Verdict,
    /// Whether the per-address rate limit has counted this request (it is asked before the
    /// credential is verified, and only once).
    pub address_limited: bool,
    /// Whether this request's access-log line is written: fields that cost something to fill
    /// (the video's alias) are filled only then.
    pub logged: bool,
    /// When the request's response head is due (`limits.request_timeout` after arrival), set
    /// by the edge. Reading the body ends at this same instant, so a body that never arrives
    /// is always the client's timeout (408), never the gateway's (503).
    pub deadline: Option<tokio::time::Instant>,
}

/// What authorization decided, and by which rule.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    pub decision: Option<Decision>,
    /// The deciding rule's position in the policy (none for the default deny).
    pub rule_index: Option<usize>,
    /// The video, when the request is logged: its alias is looked up in the same snapshot
    /// when the line is written (a copy of the uid costs less than counting a reference to
    /// the alias, which every core would write to).
    pub video: Option<VideoUid>,
}

impl Context {
    /// The Unix second the request arrived in.
    pub fn unix_second(&self) -> u64 {
        self.arrived
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    }

    /// The context of a request from `peer` whose viewer is `client`.
    pub fn new(id: HeaderValue, peer: SocketAddr, client: IpAddr, label: metrics::Route) -> Self {
        Self {
            id,
            arrived: SystemTime::now(),
            peer,
            client,
            label,
            identity: Identity::Anonymous,
            verdict: Verdict::default(),
            address_limited: false,
            logged: false,
            deadline: None,
        }
    }
}
