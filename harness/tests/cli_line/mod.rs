//! Shared by the tests of the documents and the CI pipeline: finds the
//! harness calls in a shell line (`release-harness ...`, `cargo xtask ...`)
//! and parses them with the real CLI, so a renamed flag or subcommand breaks
//! the test that holds the stale line.
#![allow(dead_code)]

use std::collections::BTreeMap;

use clap::Parser;
use harness::cli::Cli;

/// Flags `cargo xtask dist` takes (it is parsed by xtask, not by the CLI).
const DIST_FLAGS: [&str; 3] = ["--out", "--help", "-h"];

/// A harness call found in a line.
#[derive(Debug)]
pub enum Call {
    Cli(Box<Cli>),
    /// `--help` or `--version`: clap answers them before anything else.
    Help,
    Dist(Vec<String>),
}

/// Replaces `$NAME` and `${NAME}` with `vars`; a variable it does not know
/// is an error, so a line cannot pass by leaving something unchecked.
pub fn substitute(line: &str, vars: &BTreeMap<&str, &str>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in `{line}`"))?;
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if name == "?" || after.starts_with('?') {
            out.push_str("$?");
            rest = &after[1..];
            continue;
        }
        let value = vars
            .get(name)
            .ok_or_else(|| format!("`{line}` uses ${name}, which the test does not know"))?;
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The harness calls in one shell line, parsed. Shell operators end a call.
pub fn calls_in(line: &str, vars: &BTreeMap<&str, &str>) -> Result<Vec<Call>, String> {
    let line = substitute(line, vars)?;
    let words = shlex::split(&line).ok_or_else(|| format!("`{line}` is not valid shell"))?;
    let mut calls = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let start = if words[i] == "release-harness" {
            Some(i + 1)
        } else if words[i] == "cargo" && words.get(i + 1).map(String::as_str) == Some("xtask") {
            Some(i + 2)
        } else {
            None
        };
        let Some(start) = start else {
            i += 1;
            continue;
        };
        let end = (start..words.len())
            .find(|&j| is_operator(&words[j]))
            .unwrap_or(words.len());
        let args: Vec<String> = words[start..end]
            .iter()
            .map(|w| w.trim_end_matches(';').to_string())
            .collect();
        calls.push(parse(&words[i], &args, &line)?);
        i = end;
    }
    Ok(calls)
}

fn is_operator(word: &str) -> bool {
    matches!(word, "||" | "&&" | ";" | "|" | ")" | ">" | "2>&1" | ">>")
        || word.starts_with('>')
        || word.starts_with("2>")
}

fn parse(program: &str, args: &[String], line: &str) -> Result<Call, String> {
    if program == "cargo" && args.first().map(String::as_str) == Some("dist") {
        let mut rest = args[1..].iter();
        while let Some(a) = rest.next() {
            if !DIST_FLAGS.contains(&a.as_str()) {
                return Err(format!("`{line}`: cargo xtask dist has no flag `{a}`"));
            }
            if a == "--out" && rest.next().is_none() {
                return Err(format!("`{line}`: --out needs a directory"));
            }
        }
        return Ok(Call::Dist(args[1..].to_vec()));
    }
    let argv = std::iter::once("release-harness".to_string()).chain(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(cli) => Ok(Call::Cli(Box::new(cli))),
        // --help and --version "fail" with their own output: they parse.
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            Ok(Call::Help)
        }
        Err(e) => Err(format!("`{line}` does not parse with the CLI:\n{e}")),
    }
}
