//! The plain shell: a rustyline prompt over the embedded interpreter.
//!
//! The prompt waits with the interpreter released, so the server keeps
//! running Python streams; each line (a bracketed paste is one line with
//! newlines in it) goes to `dmon_shell.push_plain_line`, which runs every
//! statement it completes and says whether a block is still open (`...`).
//! rustyline keeps what it read ahead between prompts (its `buffer-redux`
//! feature), so lines sent in a burst are not lost while one runs. Server
//! output reaches the screen above the prompt through rustyline's external
//! printer.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::exceptions::PySystemExit;
use pyo3::prelude::*;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::{DefaultHistory, History};
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, ExternalPrinter, Helper};

use super::shell::shell_module;
use dmon_server::console::LineSink;

pub type ShellEditor = Editor<ShellHelper, DefaultHistory>;

/// Completion from Python's `rlcompleter`, and the coloured prompt.
pub struct ShellHelper {
    color: bool,
}

impl Helper for ShellHelper {}
impl Validator for ShellHelper {}
impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        default: bool,
    ) -> Cow<'b, str> {
        let _ = default;
        if self.color {
            Cow::Owned(format!("\x1b[1;32m{prompt}\x1b[0m"))
        } else {
            Cow::Borrowed(prompt)
        }
    }
}

impl Completer for ShellHelper {
    type Candidate = String;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| i + 1);
        let word = &before[start..];
        if word.is_empty() {
            // Tab at the start of a line indents, as in Python's own REPL.
            return Ok((pos, vec!["    ".into()]));
        }
        let candidates = Python::attach(|py| {
            shell_module(py)?
                .call_method1("complete", (word,))?
                .extract::<Vec<String>>()
        })
        .unwrap_or_default();
        Ok((start, candidates))
    }
}

/// Prints server output above the prompt without breaking the typed line.
pub struct PromptSink(Mutex<Box<dyn ExternalPrinter + Send>>);

impl LineSink for PromptSink {
    fn write_line(&self, line: &str) {
        let mut printer = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if printer.print(format!("{line}\n")).is_err() {
            println!("{line}");
        }
    }
}

/// The editor, with its history loaded, and a sink for server output.
pub fn editor(color: bool) -> rustyline::Result<(ShellEditor, Option<PromptSink>)> {
    let config = Config::builder()
        // Tab completes what all candidates share, then lists them, as
        // bash and Python's own REPL do (the default cycles through them
        // inline, which hides what there is to choose from).
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .max_history_size(10_000)?
        .build();
    let mut editor = ShellEditor::with_config(config)?;
    editor.set_helper(Some(ShellHelper { color }));
    if let Some(path) = history_path() {
        let _ = editor.load_history(&path);
    }
    let sink = editor
        .create_external_printer()
        .ok()
        .map(|p| PromptSink(Mutex::new(Box::new(p))));
    Ok((editor, sink))
}

/// `$XDG_DATA_HOME/dmon/history`, or `~/.local/share/dmon/history`.
pub fn history_path() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("dmon").join("history"))
}

/// Reads and evaluates until Ctrl-D or `exit()`.
pub fn run(editor: &mut ShellEditor, banner: &str) {
    println!("{banner}");
    // Lines of the current input, for the history; the interpreter keeps
    // its own.
    let mut source = String::new();
    loop {
        let prompt = if source.is_empty() { ">>> " } else { "... " };
        match editor.readline(prompt) {
            Ok(line) => {
                if !source.is_empty() {
                    source.push('\n');
                }
                source.push_str(&line);
                let more = Python::attach(|py| -> PyResult<bool> {
                    shell_module(py)?
                        .call_method1("push_plain_line", (line.as_str(),))?
                        .extract()
                });
                match more {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) if Python::attach(|py| e.is_instance_of::<PySystemExit>(py)) => break,
                    Err(e) => eprintln!("{e}"),
                }
                let entry = source.trim_end();
                if !entry.is_empty() {
                    let _ = editor.history_mut().add(entry);
                }
                source.clear();
            }
            Err(ReadlineError::Interrupted) => {
                println!("KeyboardInterrupt");
                source.clear();
                let _ = Python::attach(|py| {
                    shell_module(py)?
                        .call_method0("reset_plain_input")
                        .map(drop)
                });
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("dmon: reading input failed: {e}");
                break;
            }
        }
    }
    if let Some(path) = history_path() {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = editor.save_history(&path) {
            tracing::warn!("could not save shell history to {}: {e}", path.display());
        }
    }
}
