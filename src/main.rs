//! The `petrel` command: parses arguments and hands over to the library's CLI.

fn main() -> anyhow::Result<()> {
    let code = petrel::cli::run(std::env::args_os().collect())?;
    std::process::exit(code);
}
