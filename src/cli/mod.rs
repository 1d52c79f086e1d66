//! The `tmc` command line. Every flag has `--help` text and an environment variable fallback.

mod apidoc;
mod generate;
mod install;
mod logging;
mod manager;
mod manifest;
mod ops;
mod preview;
mod status;
mod status_view;
mod syncer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::kcp::WorkspacePath;
use crate::kcp::export::DEFAULT_EXPORT_NAME;

/// Transparent Multi-Cluster for kcp: run workloads from kcp workspaces on real clusters.
#[derive(Debug, Parser)]
#[command(name = "tmc", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log output format.
    #[arg(long, global = true, env = "TMC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the SyncTarget reconciler against every workspace bound to the APIExport.
    Manager(Box<manager::ManagerArgs>),
    /// Run a syncer beside a physical cluster for one SyncTarget (pull mode).
    Syncer(syncer::SyncerArgs),
    /// Print what a cluster admin applies to run a pull-mode syncer beside a physical cluster.
    SyncerManifest(manifest::ManifestArgs),
    /// Create or update the APIResourceSchemas and the APIExport in a kcp workspace.
    Install(install::InstallArgs),
    /// Print the CustomResourceDefinitions of kcp-tmc's APIs as YAML.
    Crds,
    /// Show Placements, SyncTargets (readiness, heartbeat, synced objects) and objects that
    /// failed to sync, for one or more tenant workspaces.
    Status(status::StatusArgs),
    /// Work with Placements before applying them.
    #[command(subcommand)]
    Placement(PlacementCommand),
    /// Write the generated files: crds/, config/kcp/, the sample APIBinding, config/syncer/ and
    /// docs/api.md.
    Generate(generate::GenerateArgs),
}

#[derive(Debug, Subcommand)]
pub enum PlacementCommand {
    /// Show, for a Placement manifest, which SyncTargets the manager would choose and why
    /// each other one is not chosen (labels, Ready, cordon, drain, consent, kinds, number of
    /// targets), read with your own kubeconfig; nothing is written.
    Preview(preview::PreviewArgs),
}

/// Which kubeconfig reaches kcp; shared by every subcommand that talks to kcp as its caller.
#[derive(Clone, Debug, Args)]
pub struct KubeconfigArgs {
    /// Path to a kubeconfig for kcp. Without it, $KUBECONFIG, ~/.kube/config or the in-cluster
    /// service account are tried, in that order.
    #[arg(long, env = "TMC_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Context in the kubeconfig to use (default: its current context).
    #[arg(long, env = "TMC_CONTEXT")]
    pub context: Option<String>,
}

impl KubeconfigArgs {
    /// The kubeconfig named, or the inferred one, at the context named.
    pub async fn load(&self) -> Result<kube::Config, CliError> {
        let options = kube::config::KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        kube_config_from(self.kubeconfig.as_ref(), &options).await
    }
}

/// How to reach kcp; shared by the subcommands that talk to it.
#[derive(Clone, Debug, Args)]
pub struct KcpArgs {
    #[command(flatten)]
    pub kcp: KubeconfigArgs,

    /// Path of the workspace that holds (or will hold) the APIExport, e.g. root:tmc.
    #[arg(long, env = "TMC_WORKSPACE", value_parser = parse_workspace)]
    pub workspace: WorkspacePath,

    /// Name of the APIExport.
    #[arg(long, env = "TMC_EXPORT_NAME", default_value = DEFAULT_EXPORT_NAME)]
    pub export_name: String,
}

/// Errors the CLI reports before exiting non-zero; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "cannot read kubeconfig {path}: {source}\n  fix: pass --kubeconfig with a readable kubeconfig file for kcp"
    )]
    ReadKubeconfig { path: PathBuf, source: kube::config::KubeconfigError },
    #[error("cannot find a kubeconfig for kcp: {0}\n  fix: pass --kubeconfig or set KUBECONFIG")]
    InferKubeconfig(kube::config::InferConfigError),
    #[error("{flag}: {source}")]
    Listen { flag: &'static str, source: crate::server::ServerError },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Failed(String),
}

pub(crate) fn parse_workspace(s: &str) -> Result<WorkspacePath, String> {
    s.parse().map_err(|e: crate::kcp::cluster::NameError| e.to_string())
}

/// Parses durations such as `40s`, `2m`, `1h30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?}: use a number with a unit, e.g. 500ms, 40s, 2m, 1h30m");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(err()),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

async fn load_kube_config(args: &KcpArgs) -> Result<kube::Config, CliError> {
    args.kcp.load().await
}

/// The kubeconfig at `path`, or the inferred one (`$KUBECONFIG`, `~/.kube/config`, in-cluster).
async fn kube_config_from(
    path: Option<&PathBuf>,
    options: &kube::config::KubeConfigOptions,
) -> Result<kube::Config, CliError> {
    match path {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|source| CliError::ReadKubeconfig { path: path.clone(), source })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, options)
                .await
                .map_err(|source| CliError::ReadKubeconfig { path: path.clone(), source })
        }
        None => kube::Config::infer().await.map_err(CliError::InferKubeconfig),
    }
}

/// Runs the parsed command line; the exit code is 0 on success, 1 on failure.
pub fn run(cli: Cli) -> ExitCode {
    logging::init(cli.log_format);
    let result = match cli.command {
        Command::Crds => generate::print_crds().map_err(|e| CliError::Failed(e.to_string())),
        Command::Generate(args) => generate::run(&args),
        Command::Manager(args) => block_on(manager::run(*args)),
        Command::Install(args) => block_on(install::run(args)),
        Command::Syncer(args) => block_on(syncer::run(args)),
        Command::SyncerManifest(args) => manifest::run(&args),
        Command::Status(args) => block_on(status::run(args)),
        Command::Placement(PlacementCommand::Preview(args)) => block_on(preview::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels on SIGINT or SIGTERM, so in-flight reconciles finish and watches close cleanly.
pub(crate) async fn cancel_on_signal(cancel: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    cancel.cancel();
}

/// Writes `text` to stdout; a closed pipe (`tmc crds | head`) is not an error.
pub(crate) fn emit(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::Failed(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

fn block_on<F: std::future::Future<Output = Result<(), CliError>>>(f: F) -> Result<(), CliError> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(CliError::Runtime)?.block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("40s", Some(40_000)),
            ("500ms", Some(500)),
            ("2m", Some(120_000)),
            ("1h30m", Some(5_400_000)),
            ("1m30s", Some(90_000)),
            ("", None),
            ("40", None),
            ("s", None),
            ("4 0s", None),
            ("-1s", None),
            ("10d", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).ok().map(|d| d.as_millis() as u64), *want, "{input:?}");
        }
    }

    #[test]
    fn every_flag_has_help_and_env() {
        fn check(cmd: &clap::Command) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_positional() {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{} --{id} has no help", cmd.get_name());
                assert!(arg.get_env().is_some(), "{} --{id} has no env fallback", cmd.get_name());
            }
            cmd.get_subcommands().for_each(check);
        }
        Cli::command().debug_assert();
        check(&Cli::command());
    }

    #[test]
    fn invalid_flags_say_what_to_fix() {
        let err = Cli::try_parse_from(["tmc", "install", "--workspace", "Root:Bad"]).unwrap_err().to_string();
        assert!(err.contains("lower-case"), "{err}");
        let err = Cli::try_parse_from(["tmc", "manager", "--workspace", "root", "--heartbeat-threshold", "forty"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("e.g. 500ms"), "{err}");
        let err =
            Cli::try_parse_from(["tmc", "manager", "--workspace", "root", "--workers", "0"]).unwrap_err().to_string();
        assert!(err.contains("workers"), "{err}");
    }
}

#[cfg(test)]
mod config_tests;
