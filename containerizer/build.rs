//! Links `mezzo-launcher` as a position-dependent executable.
//!
//! The supervisor runs once per container launch, and libcontainer forks it
//! twice more: as a PIE its 25,000 relative relocations made the loader
//! write over 100 pages of `.data.rel.ro` at every start, page faults that
//! each fork then copied and each exit tore down again. Without PIE those
//! pages stay clean, shared with the page cache. The objects are still
//! position-independent; only the final link differs.
fn main() {
    println!("cargo:rustc-link-arg-bin=mezzo-launcher=-no-pie");
}
