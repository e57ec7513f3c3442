//! The `petrel` command: parses arguments and hands over to the library's CLI.

/// mimalloc: DD's batchers allocate and free many small vectors; glibc's allocator spent a
/// fifth of ingest time returning and re-faulting pages (measured with `perf`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let code = petrel::cli::run(std::env::args_os().collect())?;
    std::process::exit(code);
}
