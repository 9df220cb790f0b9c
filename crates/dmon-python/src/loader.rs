//! Loading the user's stream module and finding its roots.
//!
//! The module is a `.py`/`.hy` path, `NAME` for `./NAME.py` (or `.hy`), a
//! module name on `PYTHONPATH`, or the
//! example embedded in the binary. Its roots are the module-level names
//! containing `stream` whose values are streams, in definition order.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};

use super::loader_py;
use super::nodes::to_node;
use super::stream_object::PyStream;
use super::streams::StreamFunction;
use dmon_server::roots::Root;

/// The stream module used when none is given: examples/streams.py.
pub const EMBEDDED_EXAMPLE: &str = include_str!("../../../examples/streams.py");

/// Where a stream module comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamSource {
    Path(String),
    Module(String),
    Embedded,
}

impl StreamSource {
    /// A `.py`/`.hy` file or anything with a slash is a path. A bare `NAME`
    /// is the file `NAME.py` (or `NAME.hy`) in the current directory when
    /// there is one, as a user who just wrote it there expects (the
    /// interpreter's path does not include the current directory);
    /// otherwise a module name.
    pub fn parse(spec: Option<&str>) -> StreamSource {
        match spec {
            None | Some("") => StreamSource::Embedded,
            Some(s) if s.ends_with(".py") || s.ends_with(".hy") || s.contains('/') => {
                StreamSource::Path(s.to_owned())
            }
            Some(s) => [".py", ".hy"]
                .iter()
                .map(|ext| format!("{s}{ext}"))
                .find(|file| std::path::Path::new(file).is_file())
                .map_or_else(|| StreamSource::Module(s.to_owned()), StreamSource::Path),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            StreamSource::Path(p) => p.clone(),
            StreamSource::Module(m) => format!("module {m}"),
            StreamSource::Embedded => "the built-in example (examples/streams.py)".into(),
        }
    }
}

/// The stream module's file, when there is one (not for the embedded example).
pub fn module_file(py: Python<'_>, source: &StreamSource) -> Option<std::path::PathBuf> {
    match source {
        StreamSource::Path(p) => std::path::absolute(p).ok(),
        StreamSource::Module(m) => py
            .import("sys")
            .and_then(|sys| {
                sys.getattr("modules")?
                    .get_item(m)?
                    .getattr("__file__")?
                    .extract::<String>()
            })
            .ok()
            .map(Into::into),
        StreamSource::Embedded => None,
    }
}

/// A load failure, already worded for the user (file, line, reason).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

/// The error for a module that defines no root.
pub fn no_streams(source: &StreamSource) -> LoadError {
    LoadError(format!(
        "{}: no streams: define at least one module-level name containing \"stream\", \
         e.g. `stream = printer()`",
        source.describe()
    ))
}

/// Imports the stream module and returns it with its roots.
pub fn load(py: Python<'_>, source: &StreamSource) -> Result<(Py<PyModule>, Vec<Root>), LoadError> {
    let module = import(py, source)?;
    let roots = roots_of(&module.bind(py).dict())?;
    if roots.is_empty() {
        return Err(no_streams(source));
    }
    Ok((module, roots))
}

pub fn import(py: Python<'_>, source: &StreamSource) -> Result<Py<PyModule>, LoadError> {
    let result = loader_py::module(py).and_then(|l| match source {
        StreamSource::Path(p) => l.call_method1("load_path", (p,)),
        StreamSource::Module(m) => l.call_method1("load_name", (m,)),
        StreamSource::Embedded => l.call_method1(
            "load_source",
            ("streams", EMBEDDED_EXAMPLE, "examples/streams.py"),
        ),
    });
    match result {
        Ok(m) => m
            .cast_into::<PyModule>()
            .map(Bound::unbind)
            .map_err(|e| LoadError(e.to_string())),
        Err(err) => {
            let is_load_error = loader_py::module(py)
                .and_then(|l| l.getattr("LoadError"))
                .is_ok_and(|t| err.get_type(py).is(&t));
            Err(LoadError(if is_load_error {
                err.value(py).to_string()
            } else {
                format!("{}: {err}", source.describe())
            }))
        }
    }
}

/// The roots in a namespace: names containing "stream" bound to a stream or
/// a coroutine. Functions, classes and modules with such names are helpers,
/// not roots; any other value is a mistake worth a warning.
pub fn roots_of(namespace: &Bound<'_, PyDict>) -> Result<Vec<Root>, LoadError> {
    let found = root_objects(namespace);
    for (name, kind) in &found.not_streams {
        tracing::warn!("{}", not_a_root(name, kind));
    }
    found
        .roots
        .into_iter()
        .map(|(name, value)| {
            let node = to_node(&value).map_err(|e| LoadError(format!("{name}: {e}")))?;
            Ok(Root { name, node })
        })
        .collect()
}

/// What a namespace holds under names containing "stream".
pub struct RootObjects<'py> {
    /// The roots and their Python values, in namespace order.
    pub roots: Vec<(String, Bound<'py, PyAny>)>,
    /// Names bound to something that is neither a stream nor a helper, with
    /// the value's type name.
    pub not_streams: Vec<(String, String)>,
}

/// The message for a name that looks like a root and is not one.
pub fn not_a_root(name: &str, kind: &str) -> String {
    format!("`{name}` contains \"stream\" but is not a stream ({kind}); it is not a root")
}

pub fn root_objects<'py>(namespace: &Bound<'py, PyDict>) -> RootObjects<'py> {
    let py = namespace.py();
    let inspect = py.import("inspect").ok();
    let is_helper = |value: &Bound<'py, PyAny>| {
        value.cast::<StreamFunction>().is_ok()
            || inspect.as_ref().is_some_and(|inspect| {
                ["ismodule", "isclass", "isroutine"].iter().any(|f| {
                    inspect
                        .call_method1(*f, (value,))
                        .and_then(|r| r.is_truthy())
                        .unwrap_or(false)
                })
            })
    };
    let mut found = RootObjects {
        roots: Vec::new(),
        not_streams: Vec::new(),
    };
    for (name, value) in namespace.iter() {
        let Ok(name) = name.extract::<String>() else {
            continue;
        };
        if !name.contains("stream") || name.starts_with('_') {
            continue;
        }
        if value.cast::<PyStream>().is_ok() {
            found.roots.push((name, value));
            continue;
        }
        if is_helper(&value) {
            continue;
        }
        let has_send = value
            .getattr_opt("send")
            .ok()
            .flatten()
            .is_some_and(|s| s.is_callable());
        if has_send {
            found.roots.push((name, value));
        } else {
            let kind = value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            found.not_streams.push((name, kind));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::StreamSource;

    #[test]
    fn source_kinds() {
        assert_eq!(StreamSource::parse(None), StreamSource::Embedded);
        assert_eq!(
            StreamSource::parse(Some("a.hy")),
            StreamSource::Path("a.hy".into())
        );
        assert_eq!(
            StreamSource::parse(Some("dir/mod")),
            StreamSource::Path("dir/mod".into())
        );
        assert_eq!(
            StreamSource::parse(Some("streams")),
            StreamSource::Module("streams".into())
        );
    }
}
