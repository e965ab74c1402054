//! `icos build-record`: write the record of what built an image (a Bazel action does), and read
//! fields of one (ci/tools/repro-check does, to enter the recorded build root).

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use icos::build_record::{BuildRecord, SourceState, FORMAT, ICOS_VERSION};
use icos::oci::Pin;

#[derive(Subcommand)]
pub enum BuildRecordCommand {
    /// Copy the commit and tree state out of Bazel's stable-status.txt, so that what depends on
    /// them does not also depend on the status file's host and user lines.
    Source {
        /// Bazel's stable-status.txt (ctx.info_file).
        #[arg(long, value_name = "FILE")]
        workspace_status: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write a build record.
    Write {
        #[arg(short, long)]
        output: PathBuf,
        /// The image, <os>/<variant>.
        #[arg(long)]
        image: String,
        /// The commit and tree state (the output of `icos build-record source`).
        #[arg(long, value_name = "FILE")]
        source: PathBuf,
        /// The build root, <name>@sha256:<digest>, or "unknown".
        #[arg(long)]
        build_root: String,
        /// A pinned base image under the image, <name>@sha256:<digest>; repeat for several.
        #[arg(long = "base-image", value_name = "REFERENCE")]
        base_images: Vec<Pin>,
        /// A host program and its version, NAME=VERSION; repeat for several.
        #[arg(long = "host-tool", value_name = "NAME=VERSION", value_parser = super::container::parse_pair)]
        host_tools: Vec<(String, String)>,
        /// The kernel release of the machine.
        #[arg(long)]
        kernel: String,
    },
    /// Print one field of a record.
    Get { field: Field, record: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Field {
    Commit,
    Tree,
    BuildRoot,
    /// One pinned base image a line.
    BaseImages,
    Icos,
}

pub fn run(command: BuildRecordCommand) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        BuildRecordCommand::Source { workspace_status, output } => {
            SourceState::from_workspace_status(&workspace_status)?.write(&output)?;
        }
        BuildRecordCommand::Write { output, image, source, build_root, base_images, host_tools, kernel } => {
            if build_root != "unknown" {
                build_root.parse::<Pin>().map_err(|problem| format!("--build-root: {problem}"))?;
            }
            let state = SourceState::from_workspace_status(&source)?;
            let record = BuildRecord {
                format: FORMAT.to_owned(),
                image,
                commit: state.commit,
                tree: state.tree,
                build_root,
                base_images: base_images.iter().map(Pin::to_string).collect(),
                host_tools: host_tools.into_iter().collect(),
                kernel,
                icos: ICOS_VERSION.to_owned(),
            };
            record.write(&output)?;
        }
        BuildRecordCommand::Get { field, record } => {
            let record = BuildRecord::read(&record)?;
            let lines = match field {
                Field::Commit => vec![record.commit],
                Field::Tree => vec![record.tree],
                Field::BuildRoot => vec![record.build_root],
                Field::BaseImages => record.base_images,
                Field::Icos => vec![record.icos],
            };
            for line in lines {
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
