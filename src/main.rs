use clap::Parser;

// mimalloc, not the system allocator: a tool call allocates heavily (HTTP, JSON, rows), and
// glibc malloc showed as ~14% of the server's CPU. Measured with `cargo bench --bench mcp`
// in one run each: query_records 0.39 -> 0.45 of hand-written SQL, search_accounts with
// the rmcp client 0.44 -> 0.46 of direct SQL.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hdls::logging::init();
    let cli = hdls::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hdls::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
