//! Log setup: human format by default, JSON lines with `--log-format json`. Every line printed
//! is also kept in the node's log ring (`/api/logs`, `/api/events`).

use clap::ValueEnum;
use infermesh_api::logs::CaptureLayer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// llama.cpp reports every tensor while loading; only its errors matter to an operator.
/// The TLS verifier logs a rejected certificate at `error` on its own; the request that failed
/// reports the same cause with the fix (`ca_cert`), so that line would only say it twice.
const DEFAULT_FILTER: &str = "info,llama-cpp-2=error,rustls_platform_verifier=off";

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("INFERMESH_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let printer = match format {
        LogFormat::Human => fmt::layer()
            .with_target(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(printer)
        .with(CaptureLayer)
        .init();
}
