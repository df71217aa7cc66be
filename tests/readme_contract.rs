//! README's Robustness table is a contract: every row names the tests that hold it, and
//! every test it names exists. A row added without a test, or a test renamed away from its
//! row, fails here.

mod common;

use common::repo_root;

/// The rows of the table under "## Robustness": (input, held-by cell).
fn rows(readme: &str) -> Vec<(String, String)> {
    let section = readme.split("\n## Robustness").nth(1).expect("README has a Robustness section");
    let section = section.split("\n## ").next().unwrap();
    let mut lines = section.lines().skip_while(|l| !l.starts_with("| input |"));
    let header: Vec<&str> = lines.next().expect("the table").split('|').map(str::trim).collect();
    assert_eq!(header.get(4).copied(), Some("held by (tests/…)"), "the table's last column names tests: {header:?}");
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            assert_eq!(cells.len(), 4, "four cells: {l}");
            (cells[0].trim_start_matches("| ").to_string(), cells[3].trim_end_matches(" |").to_string())
        })
        .collect()
}

/// (file, test) pairs named in a held-by cell: "`file`: `test`, `test`; `file`: `test` …".
/// Parenthesised remarks may name more tests of the same file.
fn named_tests(cell: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for clause in cell.split("; ") {
        let ticks: Vec<&str> = clause.split('`').skip(1).step_by(2).collect();
        let Some((file, tests)) = ticks.split_first() else { continue };
        if !clause.contains(&format!("`{file}`:")) {
            continue;
        }
        for t in tests.iter().filter(|t| t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')) {
            out.push((file.to_string(), t.to_string()));
        }
    }
    out
}

#[test]
fn every_robustness_row_names_tests_that_exist() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let rows = rows(&readme);
    assert!(rows.len() >= 19, "the table has its rows ({})", rows.len());
    let mut checked = 0;
    for (input, cell) in &rows {
        let tests = named_tests(cell);
        assert!(!tests.is_empty(), "row {input}: names no test ({cell})");
        for (file, test) in tests {
            let path = root.join("tests").join(format!("{file}.rs"));
            let source = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("row {input}: no tests/{file}.rs"));
            let at = source
                .find(&format!("fn {test}("))
                .unwrap_or_else(|| panic!("row {input}: no fn {test} in tests/{file}.rs"));
            // A test, not a helper: a #[test] attribute in the lines just above it.
            let above = &source[..at];
            let attrs = above.rsplit("\n\n").next().unwrap_or(above);
            assert!(attrs.contains("#[test]"), "row {input}: {file}::{test} is not a test");
            checked += 1;
        }
    }
    assert!(checked >= rows.len(), "{checked} tests for {} rows", rows.len());
}

#[test]
fn the_parser_sees_a_missing_test() {
    let cell = "`hostile_cli`: `denoise_refuses_bad_times_patches_and_values`; `grow`: `no_such_test` (and more)";
    let named = named_tests(cell);
    assert_eq!(named.len(), 2);
    assert_eq!(named[1], ("grow".to_string(), "no_such_test".to_string()));
    let source = std::fs::read_to_string(repo_root().join("tests/grow.rs")).unwrap();
    assert!(!source.contains("fn no_such_test("), "so the contract test would fail on it");
}
