//! Walks the descriptor set and fails on any RPC without a caller declaration, and checks that the
//! generated table covers exactly the RPCs of the descriptor set.

use prost_reflect::{DescriptorPool, Value};

#[test]
fn every_rpc_declares_its_caller() {
    let pool = DescriptorPool::decode(openshell_proto::DESCRIPTOR_SET).unwrap();
    let ext = pool.get_extension_by_name("openshell.options.v1.caller").unwrap();
    let mut seen = 0;
    for service in pool.services() {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let options = method.options();
            assert!(options.has_extension(&ext), "{path} has no caller declaration");
            let value = options.get_extension(&ext);
            assert!(
                matches!(value.as_ref(), Value::EnumNumber(1 | 2)),
                "{path}: caller must be CALLER_USER or CALLER_SANDBOX, got {value:?}"
            );
            let expected = match value.as_ref() {
                Value::EnumNumber(1) => openshell_proto::Caller::User,
                _ => openshell_proto::Caller::Sandbox,
            };
            assert_eq!(
                openshell_proto::caller_of(&path),
                Some(expected),
                "{path}: generated table disagrees"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, openshell_proto::RPC_CALLERS.len(), "table and descriptor set differ in size");
    assert!(seen >= 10, "expected the gateway and session services, found {seen} RPCs");
    assert_eq!(openshell_proto::caller_of("/openshell.gateway.v1.SandboxService/Nope"), None);
}

#[test]
fn the_session_is_for_sandboxes_only() {
    assert_eq!(
        openshell_proto::caller_of("/openshell.supervisor.v1.SupervisorSession/Open"),
        Some(openshell_proto::Caller::Sandbox)
    );
    assert_eq!(
        openshell_proto::caller_of("/openshell.gateway.v1.SandboxService/CreateSandbox"),
        Some(openshell_proto::Caller::User)
    );
}
