//! DNS wire helpers over `hickory-proto`: the probe builds raw queries and reads answers; the fake
//! internet answers from a fixed table. No resolver logic: one question, A/AAAA records only.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result, anyhow};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Parsed answer as the probe reports it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub id: u16,
    pub rcode: String,
    pub ips: Vec<IpAddr>,
}

/// The wire form of a recursive query for `qname` of type A (`aaaa = false`) or AAAA.
pub fn build_query(id: u16, qname: &str, aaaa: bool) -> Result<Vec<u8>> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    let name = Name::from_ascii(fqdn(qname)).with_context(|| format!("bad name {qname}"))?;
    msg.add_query(Query::query(name, if aaaa { RecordType::AAAA } else { RecordType::A }));
    msg.to_vec().map_err(|e| anyhow!("encode query: {e}"))
}

/// Reads a response: rcode and the A/AAAA addresses in the answer section.
pub fn parse_answer(buf: &[u8]) -> Result<Answer> {
    let msg = Message::from_vec(buf).map_err(|e| anyhow!("decode response: {e}"))?;
    let ips = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    Ok(Answer { id: msg.metadata.id, rcode: format!("{:?}", msg.metadata.response_code), ips })
}

/// The question of a query: (lower-case name without the trailing dot, "A"/"AAAA"/...).
pub fn question(buf: &[u8]) -> Result<(String, String)> {
    let msg = Message::from_vec(buf).map_err(|e| anyhow!("decode query: {e}"))?;
    let q = msg.queries.first().ok_or_else(|| anyhow!("query without question"))?;
    Ok((normalise(&q.name().to_ascii()), format!("{}", q.query_type())))
}

/// Answers `query` from `table` (name -> addresses): known name with no record of the asked type is
/// NOERROR/empty, unknown name is NXDOMAIN, anything unparsable is FORMERR.
pub fn respond(query: &[u8], table: &BTreeMap<String, Vec<IpAddr>>) -> Vec<u8> {
    let Ok(req) = Message::from_vec(query) else {
        let id = if query.len() >= 2 { u16::from_be_bytes([query[0], query[1]]) } else { 0 };
        return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr).to_vec().unwrap_or_default();
    };
    let mut resp = Message::response(req.metadata.id, OpCode::Query);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    for q in &req.queries {
        resp.add_query(q.clone());
        let key = normalise(&q.name().to_ascii());
        let before = resp.answers.len();
        match table.get(&key) {
            None => resp.metadata.response_code = ResponseCode::NXDomain,
            Some(ips) => {
                for ip in ips {
                    let rdata = match (ip, q.query_type()) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    resp.add_answer(Record::from_rdata(q.name().clone(), 5, rdata));
                }
            }
        }
        // Like a real authoritative server: a negative answer (NXDOMAIN, or no record of this type)
        // carries the zone's SOA, whose minimum TTL lets resolvers cache it (RFC 2308).
        if resp.answers.len() == before {
            resp.add_authority(Record::from_rdata(Name::root(), 5, RData::SOA(negative_soa())));
        }
    }
    resp.to_vec().unwrap_or_default()
}

fn negative_soa() -> SOA {
    let ns = Name::from_ascii("ns.fake.test.").unwrap_or_else(|_| Name::root());
    let admin = Name::from_ascii("admin.fake.test.").unwrap_or_else(|_| Name::root());
    SOA::new(ns, admin, 1, 3600, 600, 86400, 5)
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') { name.to_string() } else { format!("{name}.") }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The first `nameserver` of a resolv.conf text.
pub fn nameserver(resolv_conf: &str) -> Option<IpAddr> {
    resolv_conf.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some("nameserver")).then(|| it.next()?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_answers() {
        let mut t = BTreeMap::new();
        t.insert("allowed.test".to_string(), vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()]);
        let a = parse_answer(&respond(&build_query(7, "Allowed.Test", false).unwrap(), &t)).unwrap();
        assert_eq!((a.id, a.rcode.as_str(), a.ips.len()), (7, "NoError", 1));
        let a = parse_answer(&respond(&build_query(8, "allowed.test", true).unwrap(), &t)).unwrap();
        assert_eq!(a.ips, vec!["fd00::2".parse::<IpAddr>().unwrap()]);
        let a = parse_answer(&respond(&build_query(9, "nope.test", false).unwrap(), &t)).unwrap();
        assert_eq!((a.rcode.as_str(), a.ips.len()), ("NXDomain", 0));
        assert_eq!(
            question(&build_query(1, "x.test", true).unwrap()).unwrap(),
            ("x.test".into(), "AAAA".into())
        );
    }

    #[test]
    fn resolv_conf() {
        assert_eq!(
            nameserver("# c\nsearch x\nnameserver 127.0.0.1\nnameserver 1.1.1.1\n"),
            "127.0.0.1".parse().ok()
        );
        assert_eq!(nameserver("search x\n"), None);
    }
}
