//! The README and the book under docs/ hold together: every relative link
//! reaches a file, every `#anchor` a heading of it (as GitHub and mdBook
//! name headings), every chapter is in the book's SUMMARY.md, the book's
//! includes find their anchors, and the README stays short. No network:
//! links to other sites are not followed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn book_src() -> PathBuf {
    root().join("docs/src")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Markdown files checked: README.md and every chapter.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(book_src())
        .expect("docs/src")
        .map(|entry| entry.expect("docs/src entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    chapters.sort();
    files.extend(chapters);
    files
}

/// The text outside fenced code blocks, line by line, so a `#` comment in
/// a shell example is no heading and a `](` in code no link.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            lines.push(line);
        }
    }
    lines
}

/// `text` without its code spans (which may wrap lines), so that a `[x](y)`
/// shown as code is not taken for a link.
fn without_code_spans(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        out.push_str(&rest[..open]);
        let ticks = rest[open..].len() - rest[open..].trim_start_matches('`').len();
        let fence = &rest[open..open + ticks];
        let after = &rest[open + ticks..];
        match after.find(fence) {
            Some(close) => rest = &after[close + ticks..],
            None => {
                // An unmatched backtick is literal text.
                out.push_str(fence);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A heading's anchor as GitHub and mdBook make it: lower case, letters,
/// digits, `-` and `_` kept, spaces made `-`, everything else dropped.
fn slug(heading: &str) -> String {
    without_code_spans_keeping_text(heading)
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// A heading's text as shown: code spans keep their text, links their label.
fn without_code_spans_keeping_text(heading: &str) -> String {
    let mut text = heading.replace('`', "");
    while let (Some(open), Some(mid)) = (text.find('['), text.find("](")) {
        let Some(close) = text[mid..].find(')').map(|i| mid + i) else {
            break;
        };
        if open > mid {
            break;
        }
        text = format!(
            "{}{}{}",
            &text[..open],
            &text[open + 1..mid],
            &text[close + 1..]
        );
    }
    text
}

/// Every heading anchor of a Markdown file; a repeated heading gets `-1`,
/// `-2`, … as on GitHub.
fn anchors(path: &Path) -> HashSet<String> {
    let text = read(path);
    let mut seen = HashSet::new();
    for line in prose_lines(&text) {
        let hashes = line.len() - line.trim_start_matches('#').len();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let mut anchor = base.clone();
        let mut n = 0;
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    seen
}

/// The targets of the inline links `[label](target)` in a file's prose.
fn link_targets(text: &str) -> Vec<String> {
    let prose = without_code_spans(&prose_lines(text).join("\n"));
    let mut targets = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        // `[label](target "title")`: the target is the first word.
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.to_string());
        rest = &rest[end..];
    }
    targets
}

/// Fails listing every problem found, so one run names them all.
fn assert_none(problems: &[String], what: &str) {
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

#[test]
fn every_relative_link_reaches_a_file_and_a_heading() {
    let mut broken = Vec::new();
    for doc in documents() {
        let dir = doc.parent().expect("a file's folder");
        let name = doc
            .strip_prefix(root())
            .unwrap_or(&doc)
            .display()
            .to_string();
        for target in link_targets(&read(&doc)) {
            if is_external(&target) {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if file.is_empty() {
                doc.clone()
            } else {
                dir.join(file)
            };
            if !linked.exists() {
                broken.push(format!("{name}: {target}: no file {}", linked.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                if linked.extension().is_some_and(|ext| ext == "md")
                    && !anchors(&linked).contains(anchor)
                {
                    broken.push(format!("{name}: {target}: no heading #{anchor} there"));
                }
            }
        }
    }
    assert_none(&broken, "broken links");
}

/// A chapter's link out of docs/src works on GitHub but not in the built
/// book, whose pages hold only docs/src.
#[test]
fn the_chapters_link_only_within_the_book() {
    let src = book_src().canonicalize().expect("docs/src");
    let mut outside = Vec::new();
    for chapter in documents().into_iter().skip(1) {
        for target in link_targets(&read(&chapter)) {
            let file = target.split('#').next().unwrap_or("");
            if is_external(&target) || file.is_empty() {
                continue;
            }
            let linked = src.join(file);
            let inside = linked
                .canonicalize()
                .map(|path| path.starts_with(&src))
                .unwrap_or(false);
            if !inside {
                outside.push(format!("{}: {target}", chapter.display()));
            }
        }
    }
    assert_none(&outside, "links leaving docs/src");
}

#[test]
fn every_chapter_is_in_the_summary() {
    let summary = link_targets(&read(&book_src().join("SUMMARY.md")));
    let listed: HashSet<&str> = summary.iter().map(String::as_str).collect();
    let missing: Vec<String> = documents()
        .into_iter()
        .skip(1)
        .filter_map(|chapter| {
            let name = chapter.file_name()?.to_str()?.to_string();
            (name != "SUMMARY.md" && !listed.contains(name.as_str())).then_some(name)
        })
        .collect();
    assert_none(&missing, "chapters not in docs/src/SUMMARY.md");
}

/// `{{#include FILE:NAME}}` in a chapter needs `ANCHOR: NAME` and
/// `ANCHOR_END: NAME` in FILE, or mdBook includes nothing.
#[test]
fn the_books_includes_find_their_anchors() {
    let mut missing = Vec::new();
    for chapter in documents().into_iter().skip(1) {
        let text = read(&chapter);
        for include in text.split("{{#include ").skip(1) {
            let spec = include.split("}}").next().unwrap_or("").trim();
            let (file, anchor) = spec.split_once(':').unwrap_or((spec, ""));
            let included = read(&book_src().join(file));
            let marked = |mark: &str| included.contains(&format!("{mark}: {anchor} "));
            // A whole-file include needs no anchor.
            let found = anchor.is_empty() || (marked("ANCHOR") && marked("ANCHOR_END"));
            if !found {
                missing.push(format!("{}: {spec}", chapter.display()));
            }
        }
    }
    assert_none(&missing, "includes without their anchors");
}

/// The issue's bound: the README introduces, the book explains.
#[test]
fn the_readme_stays_short() {
    let lines = read(&root().join("README.md")).lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines; move detail into a chapter under docs/src"
    );
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug("HTTP: queries, subscriptions, Prometheus"),
        "http-queries-subscriptions-prometheus"
    );
    assert_eq!(
        slug("Time, lists, keys, reloads and restarts"),
        "time-lists-keys-reloads-and-restarts"
    );
    assert_eq!(slug("The `dmon test` command"), "the-dmon-test-command");
    assert_eq!(
        link_targets("see [a](b.md#c) and `[d](e)`, [f\ng](h \"t\")"),
        ["b.md#c", "h"]
    );
}
