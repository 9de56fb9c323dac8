//! Compiles the `.proto` files with protox (pure Rust: no system `protoc`), generates the prost/tonic
//! code, writes the descriptor set, and generates the table of who may call each RPC. An RPC without a
//! `(openshell.options.v1.caller)` declaration fails the build.

use std::fmt::Write as _;
use std::path::PathBuf;

use prost_reflect::{DescriptorPool, Value};

const FILES: &[&str] = &[
    "openshell/options/v1/options.proto",
    "openshell/gateway/v1/sandbox.proto",
    "openshell/supervisor/v1/session.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut compiler = protox::Compiler::new(["."])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(FILES)?;
    std::fs::write(out.join("descriptor.bin"), compiler.encode_file_descriptor_set())?;
    let callers = caller_table(&compiler.descriptor_pool())?;
    std::fs::write(out.join("callers.rs"), callers)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    for file in FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    Ok(())
}

/// `pub const RPC_CALLERS: &[(&str, Caller)]` keyed by the gRPC path (`/package.Service/Method`).
fn caller_table(pool: &DescriptorPool) -> Result<String, Box<dyn std::error::Error>> {
    let ext = pool
        .get_extension_by_name("openshell.options.v1.caller")
        .ok_or("extension openshell.options.v1.caller not found")?;
    let caller_enum = pool.get_enum_by_name("openshell.options.v1.Caller").ok_or("enum Caller not found")?;
    let mut table =
        String::from("/// Who may call each RPC, by gRPC path. Generated from the `.proto` files.\n");
    table.push_str("pub const RPC_CALLERS: &[(&str, Caller)] = &[\n");
    let mut missing = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let options = method.options();
            let value = options.has_extension(&ext).then(|| options.get_extension(&ext));
            let number = match value.as_deref() {
                Some(Value::EnumNumber(n)) if *n != 0 => *n,
                _ => {
                    missing.push(path);
                    continue;
                }
            };
            let variant = caller_enum.get_value(number).ok_or("unknown Caller value")?;
            let rust = match variant.name() {
                "CALLER_USER" => "Caller::User",
                "CALLER_SANDBOX" => "Caller::Sandbox",
                other => return Err(format!("{path}: unsupported caller {other}").into()),
            };
            writeln!(table, "    ({path:?}, {rust}),")?;
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "these RPCs do not declare `option (openshell.options.v1.caller)`: {}",
            missing.join(", ")
        )
        .into());
    }
    table.push_str("];\n");
    Ok(table)
}
