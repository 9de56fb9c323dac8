# OpenShell network decision (L4): may binary B reach host H on port P?
#
# data.openshell (built by openshell-policy from a validated policy, never from raw YAML):
#   network_policies: { name: { "binaries": [glob],       # as written
#                               "binary_paths": [str],    # entries without glob metacharacters
#                               "binary_globs": [glob] } } # the other entries
#   endpoints: endpoints indexed by host, so evaluation cost follows the number
#   of endpoints that name the destination, not the size of the policy:
#     { "exact":    { name:   [endpoint] },   # host: api.github.com
#       "wildcard": { suffix: [endpoint] },   # host: "*.github.com" -> key github.com
#       "ip":       { ip:     [endpoint] } }  # host: 10.0.0.1 (canonical text)
#     endpoint = { "policy": name, "index": int, "ports": [int], "enforcement": "enforce" | "audit" }
#
# input:
#   { "binary": { "path": str, "ancestors": [str] },
#     "destination": { "host": str, "port": int, "ips": [str] } }
#   The embedding Rust code normalizes destination.host (lower case, no trailing
#   dot, canonical IP text) and destination.ips (canonical IP text).
#
# decision (always defined):
#   { "allow": true,  "policy": name, "endpoint": index, "enforcement": str }
#   { "allow": false, "reason": "binary_not_allowed", "policies": [name] }
#   { "allow": false, "reason": "no_endpoint" }
# When several endpoints allow, the lowest policy name, then the lowest endpoint
# index wins, so decisions are deterministic.
#
# Host matching: exact names compare equal; "*.suffix" matches exactly one
# non-empty label in front of suffix; an IP endpoint matches the destination
# host or any of destination.ips. Binary globs use glob.match(pattern, ["/"],
# path): `*`, `?` and `[..]` stay within one path component, `**` spans
# components. openshell_policy::{HostPattern::matches, binary_matches} mirror
# this exactly, and the crate's tests cross-check both.
package openshell.network

import rego.v1

dest_host := lower(trim_suffix(input.destination.host, "."))

dest_ips := {ip | some ip in object.get(input.destination, "ips", [])}

index := data.openshell.endpoints

candidates contains ep if {
	some ep in object.get(index.exact, dest_host, [])
}

candidates contains ep if {
	labels := split(dest_host, ".")
	labels[0] != ""
	suffix := concat(".", array.slice(labels, 1, count(labels)))
	some ep in object.get(index.wildcard, suffix, [])
}

candidates contains ep if {
	some ep in object.get(index.ip, dest_host, [])
}

candidates contains ep if {
	some ip in dest_ips
	some ep in object.get(index.ip, ip, [])
}

# [policy name, endpoint index, enforcement] for every endpoint naming host:port.
endpoint_hits contains [ep.policy, ep.index, ep.enforcement] if {
	some ep in candidates
	input.destination.port in ep.ports
}

hit_policies := {h[0] | some h in endpoint_hits}

# A literal entry (no glob metacharacters) matches exactly its own path under
# glob.match, so it is compared directly; only real globs pay for glob.match.
binary_allowed(p) if input.binary.path in p.binary_paths

binary_allowed(p) if {
	some pattern in p.binary_globs
	glob.match(pattern, ["/"], input.binary.path)
}

# Binaries are only checked for policies that name host:port.
allowed_policies contains name if {
	some name in hit_policies
	binary_allowed(data.openshell.network_policies[name])
}

allowed_hits := {h | some h in endpoint_hits; h[0] in allowed_policies}

decision := {"allow": true, "policy": hit[0], "endpoint": hit[1], "enforcement": hit[2]} if {
	count(allowed_hits) > 0
	hit := sort(allowed_hits)[0]
}

decision := {"allow": false, "reason": "binary_not_allowed", "policies": sort(hit_policies)} if {
	count(allowed_hits) == 0
	count(endpoint_hits) > 0
}

decision := {"allow": false, "reason": "no_endpoint"} if {
	count(endpoint_hits) == 0
}
