//! The address check seam: may this resolved address be connected to?
//!
//! Threat handled: SSRF and DNS rebinding. An allowed *name* can resolve to a
//! loopback, link-local (cloud metadata), or private address; every address is
//! checked by [`openshell_policy::address::check_address`] against the matched
//! endpoint's `allowed_ips`, and the egress layer then connects to exactly the
//! checked address (no second resolution).
//!
//! The check is a trait so tests can reach servers on loopback (which the real
//! check always refuses). The real implementation is [`SsrfGuard`]; the seam is
//! injected explicitly through [`crate::EgressOptions::address_guard`], never
//! switched by `cfg(test)`.
//! Residual risk: whoever constructs `EgressOptions` chooses the guard; the
//! supervisor must always pass [`SsrfGuard`].

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// A refused destination address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRefused {
    /// The address that was refused.
    pub ip: IpAddr,
    /// Address class code (`loopback`, `link_local`, `private`, ...).
    pub class: &'static str,
    /// Human-readable explanation (address class and what would allow it).
    pub detail: String,
}

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Decides whether an address may be reached given an endpoint's `allowed_ips`.
pub trait AddressGuard: Send + Sync + fmt::Debug + 'static {
    /// `Ok` when `ip` may be connected to.
    ///
    /// # Errors
    /// [`AddressRefused`] naming why not.
    fn check(&self, ip: IpAddr, allowed_ips: &[IpNet]) -> Result<(), AddressRefused>;
}

/// The production guard: the policy crate's SSRF classification.
#[derive(Debug, Clone, Copy, Default)]
pub struct SsrfGuard;

impl AddressGuard for SsrfGuard {
    fn check(&self, ip: IpAddr, allowed_ips: &[IpNet]) -> Result<(), AddressRefused> {
        openshell_policy::address::check_address(ip, allowed_ips).map_err(|e| AddressRefused {
            ip,
            class: e.code(),
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_guard_refuses_loopback_and_metadata() {
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254"] {
            assert!(SsrfGuard.check(ip.parse().unwrap(), &[]).is_err(), "{ip}");
        }
        let private: IpAddr = "10.1.2.3".parse().unwrap();
        let e = SsrfGuard.check(private, &[]).unwrap_err();
        assert_eq!((e.ip, e.class), (private, "private"));
        assert!(SsrfGuard.check(private, &["10.0.0.0/8".parse().unwrap()]).is_ok());
        assert!(SsrfGuard.check("93.184.216.34".parse().unwrap(), &[]).is_ok());
    }
}
