//! Riemann's stream functions (`riemann.streams`, `riemann.folds`) and
//! where each one is in dmon: the catalog chapter (docs/src/stream-functions.md) ends with this table
//! (`dmon catalog --markdown`), so a Riemann user porting a config finds
//! every function, and a test checks that each dmon name given is
//! registered.

/// One of Riemann's public functions.
pub struct Counterpart {
    /// Its Riemann name: `fixed-time-window`, `folds/sum`.
    pub riemann: &'static str,
    /// The dmon functions that do its job (stream functions, or
    /// `folds.NAME`); none when dmon has no counterpart.
    pub dmon: &'static [&'static str],
    /// How it maps, or why there is none.
    pub note: &'static str,
}

const fn same(riemann: &'static str, dmon: &'static [&'static str]) -> Counterpart {
    Counterpart {
        riemann,
        dmon,
        note: "",
    }
}

const fn like(
    riemann: &'static str,
    dmon: &'static [&'static str],
    note: &'static str,
) -> Counterpart {
    Counterpart {
        riemann,
        dmon,
        note,
    }
}

const fn none(riemann: &'static str, note: &'static str) -> Counterpart {
    Counterpart {
        riemann,
        dmon: &[],
        note,
    }
}

/// Every public function of Riemann's streams.clj and folds.clj, in
/// Riemann's order.
pub const COUNTERPARTS: &[Counterpart] = &[
    like(
        "expired?",
        &["expired"],
        "a stream; in Python, `e.state == \"expired\"` or the query `state = \"expired\"`",
    ),
    none(
        "call-rescue",
        "internal: a child's failure is counted and logged on that node, and other events go on",
    ),
    same("exception-stream", &["exception_stream"]),
    like("bit-bucket", &["sdo"], "`sdo()` with no children"),
    none(
        "dual",
        "no counterpart: send to two streams with `sdo` or `split`",
    ),
    like(
        "smap*",
        &["smap"],
        "`smap` drops a None result rather than passing nil on",
    ),
    same("smap", &["smap"]),
    same("smapcat", &["smapcat"]),
    same("sflatten", &["sflatten"]),
    same("sreduce", &["sreduce"]),
    same("sdo", &["sdo"]),
    like(
        "stream",
        &["coroutine"],
        "a Python generator decorated with `@coroutine` (alias `@stream`)",
    ),
    none(
        "execute-on",
        "no counterpart: a tree runs on one dispatch thread; outputs send on their own threads",
    ),
    same("moving-event-window", &["moving_event_window"]),
    same("fixed-event-window", &["fixed_event_window"]),
    same("moving-time-window", &["moving_time_window"]),
    same("fixed-time-window", &["fixed_time_window"]),
    same("fixed-offset-time-window", &["fixed_offset_time_window"]),
    like(
        "window",
        &["moving_event_window"],
        "Riemann's deprecated alias",
    ),
    none(
        "periodically-until-expired",
        "internal: `rate`, `ddt` and `fill_in` report on their own timers",
    ),
    none(
        "part-time-fast",
        "internal: windows and `percentiles` are built on the engine's timers",
    ),
    none(
        "part-time-simple",
        "internal: windows and `batch` are built on the engine's timers",
    ),
    same("fold-interval", &["fold_interval"]),
    same("fold-interval-metric", &["fold_interval_metric"]),
    same("fill-in", &["fill_in"]),
    like(
        "fill-in-last*",
        &["fill_in_last"],
        "the function form of `fill-in-last`",
    ),
    same("fill-in-last", &["fill_in_last"]),
    same("interpolate-constant", &["interpolate_constant"]),
    like("ddt-real", &["ddt"], "`ddt(dt, ...)`"),
    like("ddt-events", &["ddt"], "`ddt(...)` without `dt`"),
    same("ddt", &["ddt"]),
    same("rate", &["rate"]),
    same("percentiles", &["percentiles"]),
    same("counter", &["counter"]),
    like(
        "sum-over-time",
        &["counter"],
        "`counter` keeps the running sum of the metrics",
    ),
    like(
        "mean-over-time",
        &["average"],
        "`average` keeps the running mean of the metrics",
    ),
    same("ewma-timeless", &["ewma_timeless"]),
    same("ewma", &["ewma"]),
    same("top", &["top"]),
    same("throttle", &["throttle"]),
    same("rollup", &["rollup"]),
    same("batch", &["batch"]),
    none(
        "coalesce-with-event",
        "internal: `coalesce`'s building block",
    ),
    same("coalesce", &["coalesce"]),
    none(
        "append",
        "no counterpart: collect events in a Python coroutine, or test with `dmon.testing.run`",
    ),
    none(
        "register",
        "no counterpart: keep state in a Python coroutine",
    ),
    same("forward", &["forward"]),
    same("match", &["match"]),
    like(
        "tagged-all?",
        &["tagged_all"],
        "a stream; in Python, `set(tags) <= set(e.tags)`",
    ),
    same("tagged-all", &["tagged_all", "tagged"]),
    like(
        "tagged-any?",
        &["tagged_any"],
        "a stream; in Python, `set(tags) & set(e.tags)`",
    ),
    same("tagged-any", &["tagged_any"]),
    same("expired", &["expired"]),
    same("not-expired", &["not_expired"]),
    like("with", &["with_"], "`with` is a Python keyword"),
    same("default", &["default"]),
    same("adjust", &["adjust"]),
    same("scale", &["scale"]),
    same("untag", &["untag"]),
    same("tag", &["tag"]),
    same("pipe", &["pipe"]),
    same("by", &["by"]),
    like(
        "by-builder",
        &["by"],
        "`by` builds fresh children per key from its arguments",
    ),
    like("by-fn", &["by"], "`by` with a function"),
    same("changed", &["changed"]),
    same("changed-state", &["changed_state"]),
    same("over", &["over"]),
    same("under", &["under"]),
    none(
        "where-rewrite",
        "internal: queries are compiled by dmon's query language",
    ),
    none("where-partition-clauses", "internal: `where`'s `else_=`"),
    like(
        "where*",
        &["where", "when"],
        "`where` or `when` with a function",
    ),
    same("where", &["where"]),
    none("split*-match", "internal: `split`'s clause matching"),
    like("split*", &["split"], "`split` with functions"),
    same("split", &["split"]),
    same("splitp", &["splitp"]),
    same("runs", &["runs"]),
    same("stable", &["stable"]),
    like("project*", &["project"], "`project` with functions"),
    same("project", &["project"]),
    like("apdex*", &["apdex"], "`apdex` with functions"),
    same("apdex", &["apdex"]),
    same("clock-skew", &["clock_skew"]),
    same("predict-linear", &["predict_linear"]),
    none(
        "folds/sorted-sample-extract",
        "internal: `percentiles`' selection",
    ),
    like(
        "folds/sorted-sample",
        &["percentiles"],
        "`percentiles` over an interval",
    ),
    none(
        "folds/non-nil-metrics",
        "internal: the folds skip events without a metric",
    ),
    none("folds/fold*", "internal: the folds' building blocks"),
    none("folds/fold", "internal: the folds' building blocks"),
    none("folds/fold-all", "internal: the folds' building blocks"),
    like(
        "folds/sum*",
        &["folds.sum"],
        "the starred folds throw on nil; in a stream dmon's skip it",
    ),
    same("folds/sum", &["folds.sum"]),
    like(
        "folds/product*",
        &["folds.product"],
        "the starred folds throw on nil; in a stream dmon's skip it",
    ),
    same("folds/product", &["folds.product"]),
    like(
        "folds/difference*",
        &["folds.difference"],
        "the starred folds throw on nil; dmon's says so in the description",
    ),
    same("folds/difference", &["folds.difference"]),
    like(
        "folds/quotient*",
        &["folds.quotient"],
        "the starred folds throw on nil; dmon's says so in the description",
    ),
    same("folds/quotient", &["folds.quotient"]),
    same("folds/quotient-sloppy", &["folds.quotient_sloppy"]),
    same("folds/mean", &["folds.mean"]),
    none(
        "folds/adjust-occurence",
        "internal: `modes`' building block",
    ),
    same("folds/modes", &["folds.modes"]),
    same("folds/mode", &["folds.mode"]),
    same("folds/median", &["folds.median"]),
    like(
        "folds/extremum",
        &["folds.minimum", "folds.maximum"],
        "internal in Riemann",
    ),
    same("folds/minimum", &["folds.minimum"]),
    same("folds/maximum", &["folds.maximum"]),
    same("folds/std-dev", &["folds.std_dev"]),
    same("folds/count", &["folds.count"]),
];

/// The README's table of Riemann's functions.
pub fn markdown() -> String {
    let mut out = String::from(
        "\n**Riemann's functions in dmon** (every public function of `riemann.streams` and `riemann.folds`)\n\n| Riemann | dmon | note |\n|---|---|---|\n",
    );
    for c in COUNTERPARTS {
        let dmon: Vec<String> = c.dmon.iter().map(|d| format!("`{d}`")).collect();
        let dmon = if dmon.is_empty() {
            "—".to_owned()
        } else {
            dmon.join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {dmon} | {} |\n",
            c.riemann,
            c.note.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dmon_name_given_is_registered() {
        for c in COUNTERPARTS {
            for name in c.dmon {
                let found = match name.strip_prefix("folds.") {
                    Some(fold) => crate::streams::folds::find(fold).is_some(),
                    None => crate::catalog::find(name).is_some() || *name == "coroutine",
                };
                assert!(found, "{}: dmon has no {name}", c.riemann);
            }
            assert!(
                !c.dmon.is_empty() || !c.note.is_empty(),
                "{}: say why dmon has no counterpart",
                c.riemann
            );
        }
    }

    #[test]
    fn every_riemann_function_is_listed_once() {
        let mut names: Vec<&str> = COUNTERPARTS.iter().map(|c| c.riemann).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        assert_eq!(
            before,
            84 + 25,
            "streams.clj's and folds.clj's public functions"
        );
    }
}
