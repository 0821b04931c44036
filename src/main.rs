//! The `switchyard` command: validate a config (`-t`), serve it, or import a price map (`models import`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use pingora_core::server::configuration::Opt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchyard, a self-hosted LLM gateway.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (default: the embedded conf/switchyard.yaml).
    #[arg(short = 'c', long = "conf")]
    conf: Option<PathBuf>,
    /// Validate the configuration and exit: build everything a start builds, without binding a
    /// port or starting a service (exit 2 with every problem of the configuration, by field
    /// path; 1 when building fails, e.g. a TLS certificate or the state directory).
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Take over the listening sockets of a running instance (graceful upgrade).
    #[arg(short = 'u', long)]
    upgrade: bool,
    /// Run in the background (for systemd Type=forking).
    #[arg(short = 'd', long)]
    daemon: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Model registry tools.
    Models {
        #[command(subcommand)]
        action: ModelsCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// Convert another gateway's price map into a registry overlay (YAML); the report of what was
    /// skipped goes to stderr.
    Import {
        /// The format of FILE.
        #[arg(long = "from", value_enum)]
        from: ImportFormat,
        /// The price map to read (LiteLLM: model_prices_and_context_window.json).
        file: PathBuf,
        /// Where to write the overlay (default: stdout).
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ImportFormat {
    /// LiteLLM's model_prices_and_context_window.json.
    Litellm,
}

/// `switchyard models import`: exit 0 with the overlay written, 1 when FILE cannot be read or
/// converted, or OUT cannot be written.
fn import(from: ImportFormat, file: &Path, out: Option<&Path>) -> ExitCode {
    let name = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchyard: models import: cannot read {name}: {e}");
            return ExitCode::from(1);
        }
    };
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let result = match from {
        ImportFormat::Litellm => switchyard::registry_import::from_litellm(&text, &name, &today),
    };
    let imported = match result {
        Ok(i) => i,
        Err(e) => {
            eprintln!("switchyard: models import: {e}");
            return ExitCode::from(1);
        }
    };
    match out {
        Some(o) => {
            if let Err(e) = std::fs::write(o, &imported.overlay) {
                eprintln!(
                    "switchyard: models import: cannot write {}: {e}",
                    o.display()
                );
                return ExitCode::from(1);
            }
        }
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout
                .write_all(imported.overlay.as_bytes())
                .and_then(|()| stdout.flush())
            {
                eprintln!("switchyard: models import: cannot write the overlay to stdout: {e}");
                return ExitCode::from(1);
            }
        }
    }
    eprint!("{}", imported.report);
    if let Some(o) = out {
        eprintln!("switchyard: overlay written to {}", o.display());
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max_level = logger.filter();
    if log::set_boxed_logger(Box::new(switchyard::lifecycle::UpgradeAwareLog(logger))).is_ok() {
        log::set_max_level(max_level);
    }
    let cli = Cli::parse();
    if let Some(Command::Models {
        action: ModelsCommand::Import { from, file, out },
    }) = &cli.command
    {
        return import(*from, file, out.as_deref());
    }
    let (name, read) = match &cli.conf {
        Some(p) => (p.display().to_string(), switchyard::config::read(p)),
        None => (
            "embedded conf/switchyard.yaml".to_string(),
            switchyard::config::read_embedded(),
        ),
    };
    let draft = match read {
        Ok(d) => d,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    // `-t` runs the same assembly as a start, and stops before serving
    let runtime = match switchyard::app::assemble(draft, opt) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard: {e}");
            let code = match e {
                switchyard::app::AppError::Config(_) => 2,
                _ => 1,
            };
            return ExitCode::from(code);
        }
    };
    if cli.test {
        for note in runtime.notes() {
            println!("switchyard: {note}");
        }
        println!("switchyard: configuration {name} is valid");
        return ExitCode::SUCCESS;
    }
    log::info!("switchyard serving ({name})");
    runtime.serve()
}
