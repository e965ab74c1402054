//! `icos grubenv`: create, list and change GRUB environment blocks (the A/B boot state).

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use icos::grubenv::GrubEnv;

#[derive(Subcommand)]
pub enum GrubEnvCommand {
    /// Write a new block holding the variables, in the order given.
    Create {
        #[arg(short, long)]
        output: PathBuf,
        #[arg(value_name = "NAME=VALUE", value_parser = parse_variable)]
        variables: Vec<(String, String)>,
    },
    /// Print the variables of a block, one NAME=VALUE a line.
    List { file: PathBuf },
    /// Set variables in an existing block, in place (as GRUB's save_env does).
    Set {
        file: PathBuf,
        #[arg(value_name = "NAME=VALUE", required = true, value_parser = parse_variable)]
        variables: Vec<(String, String)>,
    },
}

fn parse_variable(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))
}

pub fn run(command: GrubEnvCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        GrubEnvCommand::Create { output, variables } => {
            let mut env = GrubEnv::new();
            for (name, value) in &variables {
                env.set(name, value)?;
            }
            env.write_new(&output)?;
        }
        GrubEnvCommand::List { file } => {
            for (name, value) in GrubEnv::read(&file)?.variables() {
                println!("{name}={value}");
            }
        }
        GrubEnvCommand::Set { file, variables } => {
            let mut env = GrubEnv::read(&file)?;
            for (name, value) in &variables {
                env.set(name, value)?;
            }
            env.write_in_place(&file)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
