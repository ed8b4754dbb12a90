//! Log setup: human format by default, JSON lines with `--log-format json`.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// llama.cpp reports every tensor while loading; only its errors matter to an operator.
const DEFAULT_FILTER: &str = "info,llama-cpp-2=error";

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("INFERMESH_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}
