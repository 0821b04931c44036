//! The `switchyard` command: validate a config (`-t`) or serve it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pingora_core::server::configuration::Opt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchyard, a self-hosted LLM gateway.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (default: the embedded conf/switchyard.yaml).
    #[arg(short = 'c', long = "conf")]
    conf: Option<PathBuf>,
    /// Validate the configuration and exit (non-zero with every problem, by field path).
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Take over the listening sockets of a running instance (graceful upgrade).
    #[arg(short = 'u', long)]
    upgrade: bool,
    /// Run in the background (for systemd Type=forking).
    #[arg(short = 'd', long)]
    daemon: bool,
}

fn main() -> ExitCode {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max_level = logger.filter();
    if log::set_boxed_logger(Box::new(switchyard::lifecycle::UpgradeAwareLog(logger))).is_ok() {
        log::set_max_level(max_level);
    }
    let cli = Cli::parse();
    let (name, loaded) = match &cli.conf {
        Some(p) => (p.display().to_string(), switchyard::config::load(p)),
        None => (
            "embedded conf/switchyard.yaml".to_string(),
            switchyard::config::embedded(),
        ),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.test {
        for note in &cfg.pricing_notes {
            println!("switchyard: {note}");
        }
        println!("switchyard: configuration {name} is valid");
        return ExitCode::SUCCESS;
    }
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    match switchyard::app::build(cfg, opt) {
        Ok(app) => {
            log::info!("switchyard serving ({name})");
            app.run()
        }
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::from(1)
        }
    }
}
