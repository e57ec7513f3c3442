//! The `petrel` command: parses arguments and hands over to the library's CLI.

/// mimalloc: DD's batchers allocate and free many small vectors; glibc's allocator spent a
/// fifth of ingest time returning and re-faulting pages (measured with `perf`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // A query's evaluation error (`throwIf`) unwinds to the engine, which fails that view and
    // reports the error to its readers; it is not a crash, so it prints no panic message.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .payload()
            .downcast_ref::<petrel_sql::EvalError>()
            .is_none()
        {
            report(info);
        }
    }));
    petrel::host::tune_process();
    let code = petrel::cli::run(std::env::args_os().collect())?;
    std::process::exit(code);
}
