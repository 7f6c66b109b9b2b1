//! The documentation cannot rot: every `lienthong …` command written in the
//! README and docs/ names a real subcommand with real flags, and every
//! subcommand's help says what it does and gives an example.
//! (docs/operator-guide.md is also run command by command, in
//! `operator_guide.rs`.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn help(path: &[&str]) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(path)
        .arg("--help")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The subcommands listed in a help text's "Commands:" section.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_subcommand_explains_itself_with_an_example() {
    let mut queue: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    let mut missing = Vec::new();
    while let Some(path) = queue.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text =
            help(&args).unwrap_or_else(|| panic!("`lienthong {} --help` fails", args.join(" ")));
        let subs = subcommands(&text);
        if subs.is_empty() {
            seen += 1;
            if !text.contains("Example") {
                missing.push(args.join(" "));
            }
        }
        for s in subs {
            let mut p = path.clone();
            p.push(s);
            queue.push(p);
        }
    }
    assert!(missing.is_empty(), "no example in the help of: {missing:?}");
    assert!(seen > 30, "only {seen} leaf subcommands found");
}

/// `lienthong …` command lines in the fenced code blocks of a Markdown file.
fn commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        // Drop leading environment assignments and prompts.
        let mut rest = line.trim();
        while let Some((first, tail)) = rest.split_once(' ') {
            if first.contains('=') && !first.starts_with('-') || first == "$" {
                rest = tail.trim_start();
            } else {
                break;
            }
        }
        if let Some(cmd) = rest.strip_prefix("lienthong ") {
            let cmd = cmd.split(" #").next().unwrap_or(cmd);
            let cmd = cmd.split(['|', '>', '&', ';', ')']).next().unwrap_or(cmd);
            out.push(cmd.trim().to_owned());
        }
    }
    out
}

#[test]
fn every_documented_command_names_real_subcommands_and_flags() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "md") {
            files.push(p);
        }
    }
    let mut checked = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for cmd in commands(&text) {
            let tokens: Vec<&str> = cmd.split_whitespace().collect();
            // The longest prefix of plain words that is a subcommand path.
            let mut path: Vec<&str> = Vec::new();
            for t in &tokens {
                if t.starts_with('-') || !t.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                    break;
                }
                let mut candidate = path.clone();
                candidate.push(t);
                if help(&candidate).is_some_and(|h| !h.is_empty()) {
                    path = candidate;
                } else {
                    break;
                }
            }
            assert!(
                !path.is_empty(),
                "{}: `lienthong {cmd}` names no subcommand",
                file.display()
            );
            let text = help(&path).unwrap();
            for flag in tokens.iter().filter(|t| t.starts_with("--")) {
                let flag = flag.split('=').next().unwrap();
                assert!(
                    text.contains(flag),
                    "{}: `lienthong {cmd}`: `lienthong {}` has no flag {flag}",
                    file.display(),
                    path.join(" ")
                );
            }
            checked.insert(cmd);
        }
    }
    assert!(
        checked.len() > 40,
        "only {} documented commands found",
        checked.len()
    );
}
