//! One DNS query in, one response out: the policy-aware part of the sandbox DNS.
//!
//! Threats handled:
//! - exfiltration and discovery through DNS: only names that some endpoint's
//!   host pattern matches are resolved upstream; others get NXDOMAIN and a
//!   `dns` deny event;
//! - DNS rebinding: address answers are SSRF-checked against the union of the
//!   matching endpoints' `allowed_ips`; refused addresses are removed (REFUSED if
//!   none is left) and reported with reason `rebinding`;
//! - hostile packets: decoding errors give FORMERR (or are dropped when not even
//!   an id can be read); nothing here panics on input.
//!
//! TTLs are capped at [`MAX_TTL`] so a policy change or a rebinding attempt is
//! not cached for long by the agent. `localhost` names are answered locally.
//! Residual risk: the decision is by name only (see [`crate::policy_view`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA};
use hickory_resolver::proto::rr::{DNSClass, RData, Record, RecordType};

use crate::events::{Event, EventDecision, EventKind};
use crate::policy_view;
use crate::state::{Counters, Shared};

/// Longest TTL handed to the agent.
pub(crate) const MAX_TTL: u32 = 60;
/// Classic DNS/UDP payload limit without EDNS.
const UDP_DEFAULT: usize = 512;
/// Largest UDP payload we send with EDNS (the DNS-flag-day value).
const UDP_EDNS_MAX: u16 = 1232;

/// Answers one wire-format query. `udp` selects truncation for UDP. `None`
/// means: drop silently (not even a query id could be read).
pub(crate) async fn respond(shared: &Shared, wire: &[u8], udp: bool) -> Option<Vec<u8>> {
    Counters::bump(&shared.counters.dns_queries);
    let req = match Message::from_vec(wire) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "malformed DNS query");
            let id = u16::from_be_bytes([*wire.first()?, *wire.get(1)?]);
            return encode(&Message::error_msg(id, OpCode::Query, ResponseCode::FormErr), udp, None);
        }
    };
    let id = req.metadata.id;
    if req.metadata.message_type != MessageType::Query {
        return None; // never answer responses (reflection loops)
    }
    if req.metadata.op_code != OpCode::Query {
        return encode(&Message::error_msg(id, req.metadata.op_code, ResponseCode::NotImp), udp, None);
    }
    let [query] = req.queries.as_slice() else {
        return encode(&Message::error_msg(id, OpCode::Query, ResponseCode::FormErr), udp, None);
    };
    let max_udp = req.edns.as_ref().map(|e| usize::from(e.max_payload().clamp(512, UDP_EDNS_MAX)));
    let mut resp = Message::response(id, OpCode::Query);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_query(query.clone());
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_EDNS_MAX);
        resp.set_edns(edns);
    }
    let (code, answers) = resolve(shared, query).await;
    resp.metadata.response_code = code;
    resp.add_answers(answers);
    encode(&resp, udp, max_udp)
}

async fn resolve(shared: &Shared, q: &Query) -> (ResponseCode, Vec<Record>) {
    let name = q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let qtype = q.query_type();
    if q.query_class() != DNSClass::IN {
        return (ResponseCode::Refused, Vec::new());
    }
    if name == "localhost" || name.ends_with(".localhost") {
        let rdata = match qtype {
            RecordType::A => Some(RData::A(A(Ipv4Addr::LOCALHOST))),
            RecordType::AAAA => Some(RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
            _ => None,
        };
        let answers = rdata.map(|r| Record::from_rdata(q.name().clone(), MAX_TTL, r)).into_iter().collect();
        return (ResponseCode::NoError, answers);
    }
    let engine = shared.engine();
    let endpoints = policy_view::endpoints_for_name(&engine, &name);
    if endpoints.is_empty() {
        deny(
            shared,
            &name,
            qtype,
            "no_endpoint",
            format!("no network policy endpoint names {name}"),
            &[],
            &[],
        );
        return (ResponseCode::NXDomain, Vec::new());
    }
    let allowed_ips = policy_view::allowed_ips(&endpoints);
    let lookup = match shared.upstream.lookup(q.name().clone(), qtype).await {
        Ok(l) => l,
        Err(e) if e.is_nx_domain() => return (ResponseCode::NXDomain, Vec::new()),
        Err(e) if e.is_no_records_found() => return (ResponseCode::NoError, Vec::new()),
        Err(e) => {
            tracing::debug!(name, error = %e, "upstream DNS failure");
            return (ResponseCode::ServFail, Vec::new());
        }
    };
    let mut kept = Vec::new();
    let mut refused: Vec<(IpAddr, &'static str, String)> = Vec::new();
    let mut had_addresses = false;
    for record in lookup.answers() {
        let mut r = record.clone();
        r.ttl = r.ttl.min(MAX_TTL);
        if let Some(ip) = r.data.ip_addr() {
            had_addresses = true;
            if let Err(e) = shared.guard.check(ip, &allowed_ips) {
                refused.push((ip, e.class, e.detail));
                continue;
            }
            shared.answers.record(&name, ip, r.ttl);
        }
        kept.push(r);
    }
    if !refused.is_empty() {
        let detail = refused.iter().map(|(_, _, d)| d.as_str()).collect::<Vec<_>>().join("; ");
        let ips: Vec<IpAddr> = refused.iter().map(|(ip, _, _)| *ip).collect();
        let classes: Vec<&str> = refused.iter().map(|(_, c, _)| *c).collect();
        deny(shared, &name, qtype, "rebinding", detail, &ips, &classes);
        if had_addresses && !kept.iter().any(|r| r.data.ip_addr().is_some()) {
            return (ResponseCode::Refused, Vec::new());
        }
    }
    tracing::debug!(name, ?qtype, answers = kept.len(), "dns answered");
    (ResponseCode::NoError, kept)
}

fn deny(
    shared: &Shared,
    name: &str,
    qtype: RecordType,
    reason: &'static str,
    detail: String,
    ips: &[IpAddr],
    classes: &[&str],
) {
    Counters::bump(&shared.counters.denied);
    if !shared.dns_denials.first_in_window(name, reason) {
        tracing::debug!(name, reason, "dns denial (event suppressed: repeated)");
        return;
    }
    let mut e = Event::new(&shared.sandbox_id, EventKind::Dns, EventDecision::Deny)
        .with_detail("qtype", qtype.to_string())
        .with_detail("message", detail);
    e.host = Some(name.to_owned());
    e.reason = Some(reason.to_owned());
    e.generation = Some(shared.engine().generation());
    e.ip = ips.first().copied();
    if !classes.is_empty() {
        e.detail.insert("address_classes".to_owned(), classes.to_vec().into());
    }
    if ips.len() > 1 {
        e.detail.insert("ips".to_owned(), ips.iter().map(ToString::to_string).collect::<Vec<_>>().into());
    }
    e.hint = Some(match reason {
        "rebinding" => format!(
            "{name} resolved to a non-public address; add it to allowed_ips of the endpoint if intended \
             (loopback and link-local can never be allowed)"
        ),
        _ => format!("add an endpoint with host {name} to network_policies"),
    });
    shared.events.emit(e);
}

/// Serializes, truncating for UDP beyond `max_udp` (or 512 without EDNS).
fn encode(msg: &Message, udp: bool, max_udp: Option<usize>) -> Option<Vec<u8>> {
    let bytes = msg.to_vec().ok()?;
    let limit = max_udp.unwrap_or(UDP_DEFAULT);
    if udp && bytes.len() > limit {
        let mut t = msg.truncate();
        t.metadata.truncation = true;
        return t.to_vec().ok();
    }
    Some(bytes)
}
