use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn classifies_v4() {
    use AddressClass as C;
    let table = [
        ("0.0.0.0", C::Unspecified),
        ("0.1.2.3", C::Reserved),
        ("127.0.0.1", C::Loopback),
        ("127.255.255.254", C::Loopback),
        ("169.254.169.254", C::LinkLocal),
        ("10.0.0.5", C::Private),
        ("172.16.0.1", C::Private),
        ("172.31.255.255", C::Private),
        ("172.32.0.1", C::Public),
        ("192.168.1.1", C::Private),
        ("100.64.0.1", C::SharedAddressSpace),
        ("100.128.0.1", C::Public),
        ("192.0.2.1", C::Reserved),
        ("198.18.0.1", C::Reserved),
        ("198.19.255.255", C::Reserved),
        ("203.0.113.9", C::Reserved),
        ("224.0.0.1", C::Multicast),
        ("239.255.255.255", C::Multicast),
        ("240.0.0.1", C::Reserved),
        ("255.255.255.255", C::Broadcast),
        ("1.1.1.1", C::Public),
        ("140.82.112.3", C::Public),
    ];
    for (addr, want) in table {
        assert_eq!(classify(ip(addr)), want, "{addr}");
    }
}

#[test]
fn classifies_v6_and_embedded_v4() {
    use AddressClass as C;
    let table = [
        ("::", C::Unspecified),
        ("::1", C::Loopback),
        ("::ffff:127.0.0.1", C::Loopback),
        ("::ffff:169.254.169.254", C::LinkLocal),
        ("::ffff:10.1.2.3", C::Private),
        ("::ffff:8.8.8.8", C::Public),
        ("::ffff:0:127.0.0.1", C::Loopback),
        ("::127.0.0.1", C::Loopback),
        ("::10.0.0.1", C::Private),
        ("64:ff9b::7f00:1", C::Loopback),
        ("64:ff9b::a9fe:a9fe", C::LinkLocal),
        ("64:ff9b::808:808", C::Public),
        ("64:ff9b:1::1", C::Reserved),
        ("2002:7f00:1::1", C::Loopback),
        ("2002:0a00:1::", C::Private),
        ("2002:0808:0808::1", C::Public),
        ("fe80::1", C::LinkLocal),
        ("febf::1", C::LinkLocal),
        ("ff02::1", C::Multicast),
        ("fc00::1", C::UniqueLocal),
        ("fd12:3456::1", C::UniqueLocal),
        ("fec0::1", C::Private),
        ("2001:db8::1", C::Reserved),
        ("2001::1", C::Reserved),
        ("100::1", C::Reserved),
        ("::2:3:4:5", C::Reserved),
        ("2606:4700:4700::1111", C::Public),
        ("2a03:2880::1", C::Public),
    ];
    for (addr, want) in table {
        assert_eq!(classify(ip(addr)), want, "{addr}");
    }
}

#[test]
fn never_reachable_ignores_allowed_ips() {
    let everything = [net("0.0.0.0/0"), net("::/0")];
    for addr in ["127.0.0.1", "169.254.169.254", "0.0.0.0", "::1", "fe80::1", "224.0.0.1", "::ffff:127.0.0.1"]
    {
        let err = check_address(ip(addr), &everything).unwrap_err();
        assert!(!err.is_overridable(), "{addr}");
        assert!(err.to_string().contains("never reach"), "{err}");
    }
}

#[test]
fn internal_needs_allowed_ips() {
    let err = check_address(ip("10.0.0.5"), &[]).unwrap_err();
    assert_eq!(err, AddressDenied::Private(ip("10.0.0.5")));
    assert_eq!(
        err.to_string(),
        "10.0.0.5 is a private address; add it to allowed_ips of the endpoint to allow it"
    );
    assert_eq!(err.code(), "private");
    assert!(check_address(ip("10.0.0.5"), &[net("10.0.0.0/8")]).is_ok());
    assert!(check_address(ip("10.0.0.5"), &[net("10.0.1.0/24")]).is_err());
    // mapped / NAT64 forms are covered by the IPv4 range
    assert!(check_address(ip("::ffff:10.0.0.5"), &[net("10.0.0.0/8")]).is_ok());
    assert!(check_address(ip("64:ff9b::a00:5"), &[net("10.0.0.0/8")]).is_ok());
    assert!(check_address(ip("fd00::5"), &[net("fd00::/8")]).is_ok());
    assert!(check_address(ip("100.64.1.1"), &[]).is_err());
    assert!(check_address(ip("1.1.1.1"), &[]).is_ok());
    assert!(check_address(ip("2606:4700:4700::1111"), &[]).is_ok());
}

#[test]
fn forbidden_allowed_ips() {
    let bad = [
        ("0.0.0.0/0", "loopback"),
        ("127.0.0.1/32", "loopback"),
        ("169.254.169.254/32", "link-local"),
        ("0.0.0.0/32", "unspecified"),
        ("::/0", "loopback"),
        ("::1/128", "loopback"),
        ("fe80::/64", "link-local"),
        ("::ffff:0:0/96", "loopback"),
        ("::ffff:127.0.0.0/104", "loopback"),
        ("64:ff9b::/96", "loopback"),
        ("2002::/16", "loopback"),
        ("224.0.0.0/8", "multicast"),
    ];
    for (n, class) in bad {
        let got = forbidden_overlap(&net(n)).unwrap_or_else(|| panic!("{n} accepted"));
        assert_eq!(got.class, class, "{n}");
    }
    for ok in
        ["10.0.0.0/8", "192.168.0.0/16", "100.64.0.0/10", "fd00::/8", "::ffff:10.0.0.0/104", "8.8.8.8/32"]
    {
        assert_eq!(forbidden_overlap(&net(ok)), None, "{ok}");
    }
}
