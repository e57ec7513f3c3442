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
    raise_open_files_limit();
    let code = petrel::cli::run(std::env::args_os().collect())?;
    std::process::exit(code);
}

/// Every subscriber and connection holds a socket: a server keeps as many open files as the
/// system lets it (the soft limit raised to the hard one, as databases do at start-up), so
/// thousands of subscribers do not stop at a default of 1,024.
fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
