//! The icos command line: thin wrappers that parse arguments and call the `icos` library.
//! Exit status: 0 on success, 1 when a check finds a difference, 2 on an error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use icos::sha256sums::{check_sha256sums, write_sha256sums, CheckStatus};

#[derive(Parser)]
#[command(name = "icos", version, about = "Deterministic building blocks of icos disk images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write or check a SHA256SUMS file in the format of `sha256sum`.
    #[command(subcommand)]
    Sha256sums(Sha256SumsCommand),
}

#[derive(Subcommand)]
enum Sha256SumsCommand {
    /// List FILES by file name and SHA-256, sorted by name.
    Write {
        /// The SHA256SUMS file to create.
        #[arg(short, long)]
        output: PathBuf,
        /// The published files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check the files listed in SUMS, looked up next to it.
    Check {
        /// The SHA256SUMS file.
        sums: PathBuf,
    },
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.command {
        Command::Sha256sums(Sha256SumsCommand::Write { output, files }) => {
            write_sha256sums(&output, &files)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sha256sums(Sha256SumsCommand::Check { sums }) => {
            let mut all_ok = true;
            for file in check_sha256sums(&sums)? {
                match file.status {
                    CheckStatus::Ok => println!("{}: OK", file.name),
                    CheckStatus::Missing => {
                        all_ok = false;
                        println!("{}: MISSING", file.name);
                    }
                    CheckStatus::Mismatch { actual } => {
                        all_ok = false;
                        println!("{}: FAILED (expected {}, found {actual})", file.name, file.expected);
                    }
                }
            }
            Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("icos: error: {error}");
            ExitCode::from(2)
        }
    }
}
