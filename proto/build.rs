//! Compiles the .proto files with protox (no protoc needed) and generates
//! prost types that also implement `prost_reflect::ReflectMessage`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/mesos/v1/mesos.proto",
    "proto/mesos/v1/scheduler/scheduler.proto",
    "proto/mesos/v1/executor/executor.proto",
    "proto/mesos/v1/agent/agent.proto",
    "proto/mesos/v1/master/master.proto",
    "proto/mezzo/agent.proto",
    "proto/mezzo/registry.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds_path = out_dir.join("file_descriptor_set.bin");

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    std::fs::write(&fds_path, compiler.encode_file_descriptor_set())?;

    // prost-build reads the descriptor set protox wrote instead of running
    // protoc; prost-reflect-build adds the ReflectMessage derive to every type.
    let mut config = prost_build::Config::new();
    config.skip_protoc_run();
    prost_reflect_build::Builder::new()
        .file_descriptor_set_path(&fds_path)
        .descriptor_pool("crate::DESCRIPTOR_POOL")
        .compile_protos_with_config(config, PROTOS, &["proto"])?;
    Ok(())
}
