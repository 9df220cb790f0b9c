//! `dmon catalog`: the stream functions, from the registry; and the type
//! stubs of `dmon.streams` and `dmon.folds` (`--stubs`), which the pip
//! package ships (python/dmon/*.pyi) so mypy checks stream modules.

use std::process::ExitCode;

use crate::catalog;
use crate::streams::entry::Entry;
use crate::streams::folds::FOLDS;

#[derive(clap::Args, Debug)]
pub struct CatalogArgs {
    /// Print the catalog chapter's Markdown tables (docs/src/stream-functions.md) instead of a plain list.
    #[arg(long)]
    pub markdown: bool,
    /// Print the type stub (.pyi) of `dmon.streams` or `dmon.folds`, as
    /// python/dmon/ holds them: `dmon catalog --stubs streams > python/dmon/streams.pyi`.
    #[arg(long, value_name = "MODULE", conflicts_with_all = ["markdown", "name"])]
    pub stubs: Option<StubModule>,
    /// Show one function's whole documentation.
    pub name: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StubModule {
    Streams,
    Folds,
}

pub fn run(args: CatalogArgs) -> anyhow::Result<ExitCode> {
    let text = if let Some(module) = args.stubs {
        match module {
            StubModule::Streams => streams_stub()?,
            StubModule::Folds => folds_stub()?,
        }
    } else if let Some(name) = args.name {
        let doc = match catalog::find(&name) {
            Some(entry) => entry.doc(),
            None => match crate::streams::folds::find(name.trim_start_matches("folds.")) {
                Some(fold) => format!("folds.{}(events)\n\n{}", fold.name, fold.summary),
                None => anyhow::bail!(
                    "no stream function or fold named {name:?}; `dmon catalog` lists them"
                ),
            },
        };
        format!("{doc}\n")
    } else if args.markdown {
        catalog::markdown()
    } else {
        plain_list()
    };
    // `dmon catalog | head` closes the pipe early: that is not an error.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Each family's functions, then the folds, one line each.
fn plain_list() -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for family in catalog::families() {
        let _ = writeln!(out, "{}:", family.title);
        for e in family.entries {
            let _ = writeln!(out, "  {:<44} {}", e.signature(), e.summary);
        }
    }
    let _ = writeln!(out, "folds (from dmon import folds):");
    for f in FOLDS {
        let name = format!("folds.{}(events)", f.name);
        let _ = writeln!(out, "  {name:<44} {}", f.summary);
    }
    out
}

// ---------------------------------------------------------------------------
// Type stubs
// ---------------------------------------------------------------------------

/// How one registered parameter is typed in the stubs.
enum Typed {
    /// `name: TYPE` (`*name: TYPE` for a variadic one).
    Type(&'static str),
    /// One overload per item: the parameter's Python name (a variadic that
    /// mixes values and child streams, like `*tags_and_children`) says too
    /// little, so each item is a parameter list of its own, taking its
    /// place, positional-only as at run time.
    Shapes(&'static [&'static str]),
}

use Typed::{Shapes, Type};

/// The type of every parameter of every stream function: first for one
/// function (`("smap", "f")`), else for the name anywhere (`("", "n")`).
/// A parameter found in neither fails a test: no parameter is typed `Any`
/// by omission.
const PARAM_TYPES: &[(&str, &str, Typed)] = &[
    // By function, where the same name means something else.
    ("where", "test", Type("_Test")),
    ("when", "pred", Type("_Predicate")),
    ("splitp", "pred", Type("str | Callable[[Any, Any], object]")),
    ("splitp", "clauses", Type("tuple[object, _Child] | _Child")),
    ("split", "clauses", Type("tuple[_Test, _Child] | _Child")),
    (
        "smap",
        "f",
        Shapes(&[
            "f: Callable[[Event], _Emitted]",
            // After a window: the whole list.
            "f: Callable[[list[Event]], _Emitted]",
        ]),
    ),
    (
        "smapcat",
        "f",
        Shapes(&[
            "f: Callable[[Event], _Emitted]",
            "f: Callable[[list[Event]], _Emitted]",
        ]),
    ),
    ("changed", "pairs", Type("bool")),
    ("exception_stream", "handler", Type("_Child")),
    ("pipe", "stages", Type("_Child")),
    ("sfilter", "f", Type("_Predicate")),
    ("sreduce", "f", Type("Callable[[Any, Event], _Emitted]")),
    ("sreduce", "init", Type("object")),
    ("changed", "init", Type("object")),
    ("changed_state", "init", Type("str | None")),
    ("counter", "init", Type("float")),
    ("ddt", "dt", Type("float | None")),
    ("match", "field", Type("_Key")),
    ("splitp", "field", Type("_Key")),
    ("match", "value", Type("object")),
    ("fill_in", "default", Type("_Fields")),
    ("fill_in_last", "fields", Type("_Fields")),
    (
        "with_",
        "field_values_and_children",
        Shapes(&[
            "fields: _Fields, /, *children: _Child",
            "field: str, value: object, /, *children: _Child",
        ]),
    ),
    (
        "default",
        "field_values_and_children",
        Shapes(&[
            "fields: _Fields, /, *children: _Child",
            "field: str, value: object, /, *children: _Child",
        ]),
    ),
    (
        "adjust",
        "args_and_children",
        Shapes(&[
            "f: Callable[[Event], _Emitted], /, *children: _Child",
            "field: str, f: Callable[[Any], object], /, *children: _Child",
        ]),
    ),
    // By name, everywhere else.
    ("", "children", Type("_Child")),
    ("", "f", Type("_Key")),
    ("", "n", Type("int")),
    ("", "dt", Type("float")),
    ("", "interval", Type("float")),
    ("", "idle", Type("float | None")),
    ("", "x", Type("float")),
    ("", "low", Type("float")),
    ("", "high", Type("float")),
    ("", "factor", Type("float")),
    ("", "r", Type("float")),
    ("", "halflife", Type("float")),
    ("", "places", Type("int")),
    ("", "points", Type("Sequence[float]")),
    ("", "satisfied", Type("_Test")),
    ("", "tolerated", Type("_Test")),
    ("", "tags", Type("str | Sequence[str]")),
    ("", "else_", Type("_Child | None")),
    ("", "prefix", Type("str")),
    ("", "to", Type("str")),
    ("", "subject", Type("str | None")),
    ("", "sender", Type("str | None")),
    ("", "host", Type("str")),
    ("", "port", Type("int")),
    ("forward", "tls_ca", Type("str | None")),
    ("forward", "tls_cert", Type("str | None")),
    ("forward", "tls_key", Type("str | None")),
    ("graphite", "path", Type("str | None")),
    ("", "url", Type("str")),
    ("influxdb", "db", Type("str")),
    ("influxdb", "measurement", Type("str | None")),
    ("influxdb", "tags", Type("str | Sequence[str] | None")),
    ("influxdb", "precision", Type("str")),
    ("influxdb", "username", Type("str | None")),
    ("influxdb", "password", Type("str | None")),
    ("webhook", "template", Type("str | None")),
    ("webhook", "batch", Type("int | None")),
    ("webhook", "headers", Type("Mapping[str, str] | None")),
    (
        "",
        "tags_and_children",
        Shapes(&[
            "tags: Sequence[str], /, *children: _Child",
            "*tags_and_children: str | _Child",
        ]),
    ),
    (
        "",
        "fields_and_children",
        Type("str | Sequence[str] | Callable[[Event], object] | _Child"),
    ),
    ("", "tests_and_children", Type("_Test | _Child")),
    ("", "offset", Type("float")),
    ("", "field", Type("str")),
    ("", "fold", Type("Callable[[list[Any]], object]")),
    ("", "k", Type("int")),
    ("", "demote", Type("_Child | None")),
    ("", "seconds", Type("float")),
    ("", "rebuild", Type("float | None")),
];

/// The row of [`PARAM_TYPES`] that types `param` of stream function
/// `function`, if there is one.
fn param_row(function: &str, param: &str) -> Option<usize> {
    let find = |f: &str| {
        PARAM_TYPES
            .iter()
            .position(|(func, p, _)| *func == f && *p == param)
    };
    find(function).or_else(|| find(""))
}

fn param_type(function: &str, param: &str) -> Option<&'static Typed> {
    param_row(function, param).map(|i| &PARAM_TYPES[i].2)
}

/// What each fold returns: most give None for a list with no metric.
const FOLD_RETURNS: &[(&str, &str)] = &[
    ("sum", "Event | None"),
    ("product", "Event | None"),
    ("difference", "Event | None"),
    ("quotient", "Event | None"),
    ("mean", "Event | None"),
    ("std_dev", "Event | None"),
    ("count", "Event"),
    ("median", "Event | None"),
    ("minimum", "Event | None"),
    ("maximum", "Event | None"),
    ("extremes", "list[Event] | None"),
    ("quotient_sloppy", "Event | None"),
    ("mode", "Event | None"),
    ("modes", "list[Event]"),
];

/// One parameter of an [`Entry`]'s `params`: `*children`, `init="ok"`.
#[derive(Debug, PartialEq)]
struct Param<'a> {
    name: &'a str,
    variadic: bool,
    default: Option<&'a str>,
}

/// Splits a registered parameter list; an error names what does not fit
/// the simple shapes the registry uses.
fn parse_params(params: &str) -> Result<Vec<Param<'_>>, String> {
    let mut out = Vec::new();
    for item in params.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (head, default) = match item.split_once('=') {
            Some((h, d)) => (h.trim(), Some(d.trim())),
            None => (item, None),
        };
        let (name, variadic) = match head.strip_prefix('*') {
            Some(n) => (n, true),
            None => (head, false),
        };
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with('*')
            || (variadic && default.is_some())
        {
            return Err(format!("cannot type parameter {item:?} of ({params})"));
        }
        out.push(Param {
            name,
            variadic,
            default,
        });
    }
    Ok(out)
}

/// The stub's parameter lists for one entry: one, or one per overload.
fn signatures(entry: &Entry) -> Result<Vec<String>, String> {
    let params = parse_params(entry.params)?;
    // Each parameter's alternatives, as text.
    let mut choices: Vec<Vec<String>> = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let typed = param_type(entry.name, p.name).ok_or_else(|| {
            format!(
                "{}: parameter `{}` has no type in PARAM_TYPES (src/cmd/catalog.rs)",
                entry.signature(),
                p.name
            )
        })?;
        let star = if p.variadic { "*" } else { "" };
        let mut alternatives: Vec<String> = match typed {
            Type(t) => vec![match p.default {
                Some(d) => format!("{star}{}: {t} = {d}", p.name),
                None => format!("{star}{}: {t}", p.name),
            }],
            Shapes(shapes) => shapes.iter().map(|s| s.to_string()).collect(),
        };
        // `coalesce(dt=1, *children)`: a call may start with the children
        // (`coalesce(index())`), so an overload without the parameter.
        let before_variadic = params[i + 1..].iter().any(|q| q.variadic);
        if p.default.is_some() && before_variadic {
            alternatives.insert(0, String::new());
        }
        choices.push(alternatives);
    }
    let mut lists = vec![Vec::<String>::new()];
    for alternatives in &choices {
        lists = lists
            .iter()
            .flat_map(|list| {
                alternatives.iter().map(move |a| {
                    let mut l = list.clone();
                    if !a.is_empty() {
                        l.push(a.clone());
                    }
                    l
                })
            })
            .collect();
    }
    Ok(lists.into_iter().map(|l| l.join(", ")).collect())
}

/// A docstring for a stub, indented to sit under a `def`.
fn docstring(doc: &str) -> String {
    let body = doc.replace('\\', "\\\\").replace("\"\"\"", "\\\"\\\"\\\"");
    let indented: Vec<String> = body
        .lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("    {l}")
            }
        })
        .collect();
    format!(
        "    \"\"\"{}\n    \"\"\"\n",
        indented.join("\n").trim_start()
    )
}

/// The header of streams.pyi: what `dmon.streams` holds besides the
/// registered stream functions (crates/dmon-python/src/streams.rs, crates/dmon-python/src/event.rs).
const STREAMS_STUB_HEAD: &str = r#"# Generated by `dmon catalog --stubs streams` from dmon's registry of stream
# functions; a test keeps this file equal to that output. Do not edit.
"""dmon's stream functions: compose them into module-level names containing `stream`."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeAlias, final, overload

from typing_extensions import disjoint_base

from dmon import folds as folds

@final
class Event:
    """An event: `e.state`, `e['state']`, `e.get('metric', 0)`, `e.replace(metric=0)`.

    Immutable. Unknown names read attributes (`e.region`); unknown keyword
    arguments set them. A field that is absent reads as None.
    """

    _fields: ClassVar[tuple[str, ...]]
    # The fields may be None (absent). They are typed `X | Any`, as typeshed
    # does for values that are rarely None in practice: `e.metric > 5` and
    # `e.host.upper()` check, a wrong method or operand is still reported.
    def __new__(
        cls, fields: Event | Mapping[str, Any] | str | None = None, **kwargs: Any
    ) -> Event: ...
    @property
    def host(self) -> str | Any: ...
    @property
    def service(self) -> str | Any: ...
    @property
    def state(self) -> str | Any: ...
    @property
    def description(self) -> str | Any: ...
    @property
    def time(self) -> float | Any: ...
    @property
    def ttl(self) -> float | Any: ...
    @property
    def metric(self) -> float | Any: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def attributes(self) -> dict[str, str]: ...
    # Not a method at run time (a type slot): stubtest is told so.
    def __getattr__(self, name: str, /) -> str:
        """An attribute read as a name: `e.region` for attribute "region"."""
    def __getitem__(self, key: str, /) -> Any: ...
    def __contains__(self, key: str, /) -> bool: ...
    def get(self, key: str, default: Any = None) -> Any: ...
    def replace(self, **changes: Any) -> Event: ...
    def _replace(self, **changes: Any) -> Event: ...
    def to_dict(self) -> dict[str, Any]: ...
    def to_json(self) -> str: ...
    def __eq__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

class _Target(Protocol):
    """Anything a stream can send events to: a stream, a primed generator."""

    def send(self, event: Any, /) -> object: ...

@disjoint_base
class Stream:
    """A stream node. `node.send(event)` pushes one event in."""

    def __new__(cls, node: Stream) -> Stream:
        """Another handle on `node`'s stream node (for subclasses that show it their own way)."""
    def send(self, event: Event | Mapping[str, Any] | str) -> None: ...
    @property
    def kind(self) -> str: ...
    @property
    def children(self) -> list[Stream]: ...
    def counters(self) -> dict[str, Any]: ...

@final
class StreamFunction:
    """The result of `@coroutine`: calling it builds a primed coroutine node."""

    def __call__(self, *args: Any, **kwargs: Any) -> Stream: ...
    @property
    def __name__(self) -> str: ...

def coroutine(func: Callable[..., Any]) -> StreamFunction:
    """Decorator: make a generator function a stream constructor."""

# The same decorator under its first name, which a module's root named
# `stream` shadows. Typed Any on purpose: stream modules often name a root `stream` too
# (`stream = when(...)` after `from dmon.streams import *`), which mypy
# would refuse as a redefinition of a function, and `mymodule.stream`
# would then have the decorator's type where tests pass it to `run()`.
stream: Any

def send(event: Event | Mapping[str, Any] | str, *targets: _Target) -> None:
    """Pass an event on to each target (from inside a coroutine)."""

# A child stream: a stream, or a primed generator.
_Child: TypeAlias = Stream | _Target
# A function of the event whose truth decides.
_Predicate: TypeAlias = Callable[[Event], object]
# A query in Riemann's language (compiled once), or a predicate.
_Test: TypeAlias = str | _Predicate
# A field or attribute name, or a function of the event.
_Key: TypeAlias = str | Callable[[Event], object]
# Fields by name, as `with_` and `fill_in` take them.
_Fields: TypeAlias = Mapping[str, object]
# What smap-like functions may return: an event, a dict of fields, a list
# of either, or None for nothing.
_Emitted: TypeAlias = (
    Event | Mapping[str, object] | Sequence[Event | Mapping[str, object]] | None
)
"#;

/// `dmon.streams`' stub: the fixed classes and helpers, then one function
/// per registered stream function, typed from [`PARAM_TYPES`].
fn streams_stub() -> anyhow::Result<String> {
    let mut out = String::from(STREAMS_STUB_HEAD);
    let mut exports: Vec<&str> = crate::python::streams::HELPERS.to_vec();
    for family in catalog::families() {
        out.push_str(&format!("\n# --- {} ---\n", family.title));
        for entry in family.entries {
            exports.push(entry.name);
            let sigs = signatures(entry).map_err(anyhow::Error::msg)?;
            let doc = docstring(&entry.doc());
            for (i, sig) in sigs.iter().enumerate() {
                out.push('\n');
                if sigs.len() > 1 {
                    out.push_str("@overload\n");
                }
                out.push_str(&format!("def {}({sig}) -> Stream:", entry.name));
                // The documentation once, on the first overload.
                if i == 0 {
                    out.push('\n');
                    out.push_str(&doc);
                } else {
                    out.push_str(" ...\n");
                }
            }
        }
    }
    out.push_str("\n__all__ = [\n");
    for name in exports {
        out.push_str(&format!("    \"{name}\",\n"));
    }
    out.push_str("]\n");
    Ok(out)
}

/// `dmon.folds`' stub: each fold takes a list of events (or one event).
fn folds_stub() -> anyhow::Result<String> {
    let mut out = String::from(
        "# Generated by `dmon catalog --stubs folds` from dmon's folds; a test keeps\n\
         # this file equal to that output. Do not edit.\n\
         \"\"\"Folds: functions from a list of events to one event, for smap() after a window.\"\"\"\n\
         \n\
         from collections.abc import Sequence\n\
         \n\
         from dmon.streams import Event\n",
    );
    for fold in FOLDS {
        let returns = FOLD_RETURNS
            .iter()
            .find(|(name, _)| *name == fold.name)
            .map(|(_, r)| *r)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "folds.{} has no return type in FOLD_RETURNS (src/cmd/catalog.rs)",
                    fold.name
                )
            })?;
        out.push_str(&format!(
            "\ndef {}(events: Sequence[Event] | Event) -> {returns}:\n{}",
            fold.name,
            docstring(&format!("{}(events)\n\n{}", fold.name, fold.summary))
        ));
    }
    out.push_str("\n__all__ = [\n");
    for fold in FOLDS {
        out.push_str(&format!("    \"{}\",\n", fold.name));
    }
    out.push_str("]\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new parameter (or stream function) must be given its type here:
    /// the stubs never fall back to `Any` for it.
    #[test]
    fn every_registered_parameter_has_a_type() {
        let missing: Vec<String> = catalog::entries()
            .filter_map(|e| signatures(e).err())
            .collect();
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn every_fold_has_a_return_type() {
        folds_stub().expect("every fold typed");
        assert_eq!(
            FOLD_RETURNS.len(),
            FOLDS.len(),
            "a fold typed twice or gone"
        );
    }

    /// Every row of the table is used, so a renamed parameter does not
    /// leave a stale type behind.
    #[test]
    fn every_type_in_the_table_is_used() {
        for (row, (function, param, _)) in PARAM_TYPES.iter().enumerate() {
            let used = catalog::entries().any(|e| {
                parse_params(e.params)
                    .expect("parses")
                    .iter()
                    .any(|p| param_row(e.name, p.name) == Some(row))
            });
            assert!(
                used,
                "PARAM_TYPES row ({function:?}, {param:?}) types nothing"
            );
        }
    }

    #[test]
    fn parameters_parse_and_odd_ones_are_refused() {
        assert_eq!(
            parse_params("dt=1, *children").unwrap(),
            vec![
                Param {
                    name: "dt",
                    variadic: false,
                    default: Some("1")
                },
                Param {
                    name: "children",
                    variadic: true,
                    default: None
                }
            ]
        );
        assert!(parse_params("**kwargs").is_err());
        assert!(parse_params("*a=1").is_err());
    }

    #[test]
    fn a_default_before_the_children_gives_two_overloads() {
        let coalesce = catalog::find("coalesce").unwrap();
        assert_eq!(
            signatures(coalesce).unwrap(),
            vec![
                "*children: _Child".to_string(),
                "dt: float = 1, *children: _Child".to_string()
            ]
        );
        let average = catalog::find("average").unwrap();
        assert_eq!(
            signatures(average).unwrap(),
            vec!["places: int, *children: _Child".to_string()]
        );
    }

    #[test]
    fn docstrings_cannot_end_the_string_early() {
        let d = docstring("a \"\"\" b \\ c");
        assert_eq!(d, "    \"\"\"a \\\"\\\"\\\" b \\\\ c\n    \"\"\"\n");
    }
}
