//! `dmon catalog`: the stream functions, from the registry.

use std::process::ExitCode;

use crate::streams::folds::FOLDS;
use crate::streams::registry::{self, FAMILIES};

#[derive(clap::Args, Debug)]
pub struct CatalogArgs {
    /// Print the README's Markdown tables instead of a plain list.
    #[arg(long)]
    pub markdown: bool,
    /// Show one function's whole documentation.
    pub name: Option<String>,
}

pub fn run(args: CatalogArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = args.name {
        let doc = match registry::find(&name) {
            Some(entry) => entry.doc(),
            None => match crate::streams::folds::find(name.trim_start_matches("folds.")) {
                Some(fold) => format!("folds.{}(events)\n\n{}", fold.name, fold.summary),
                None => anyhow::bail!(
                    "no stream function or fold named {name:?}; `dmon catalog` lists them"
                ),
            },
        };
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.markdown {
        print!("{}", registry::markdown());
        return Ok(ExitCode::SUCCESS);
    }
    for family in FAMILIES {
        println!("{}:", family.title);
        for e in family.entries {
            println!("  {:<44} {}", e.signature(), e.summary);
        }
    }
    println!("folds (from dmon import folds):");
    for f in FOLDS {
        println!(
            "  {:<44} {}",
            format!("folds.{}(events)", f.name),
            f.summary
        );
    }
    Ok(ExitCode::SUCCESS)
}
