//! `.gitlab-ci.yml`, the pipeline users copy: every `release-harness` call in
//! its scripts parses with the real CLI (a renamed flag breaks this test),
//! each job calls the subcommand it is named after, production jobs never
//! overlap, the exit codes it tolerates are the CLI's, the JUnit and coverage
//! reports are where `release` writes them (and the coverage regex finds the
//! total in its summary), and its rules start the right jobs in each kind
//! of pipeline (above all: the tag that `release` pushes does not release
//! again).

mod cli_line;

use std::collections::BTreeMap;
use std::path::Path;

use cli_line::Call;
use harness::cli::{exit, Command};
use serde_norway::Value;

fn pipeline() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.gitlab-ci.yml");
    let text = std::fs::read_to_string(&path).expect(".gitlab-ci.yml at the workspace root");
    serde_norway::from_str(&text).expect(".gitlab-ci.yml is valid YAML")
}

/// Top-level keys that are not jobs.
const GLOBAL_KEYS: [&str; 10] = [
    "workflow",
    "variables",
    "default",
    "stages",
    "include",
    "image",
    "services",
    "before_script",
    "after_script",
    "cache",
];

fn jobs(p: &Value) -> BTreeMap<String, Value> {
    p.as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .filter(|(k, _)| !GLOBAL_KEYS.contains(&k.as_str()) && !k.starts_with('.'))
        .collect()
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The pipeline's variables with their default values.
fn defaults(p: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(vars) = p.get("variables").and_then(Value::as_mapping) {
        for (k, v) in vars {
            let value = match v {
                Value::String(s) => s.clone(),
                other => str_of(other, "value").unwrap_or_default().to_string(),
            };
            out.insert(k.as_str().unwrap().to_string(), value);
        }
    }
    out
}

/// Values for the variables a script line may use: GitLab's predefined ones
/// as in a pipeline on the default branch, the file's own defaults, and
/// examples where a default is empty.
fn script_vars(p: &Value) -> BTreeMap<String, String> {
    let mut vars = defaults(p);
    for (k, v) in [
        ("CI_COMMIT_BRANCH", "master"),
        ("CI_DEFAULT_BRANCH", "master"),
        ("CI_COMMIT_SHA", "0123456789abcdef0123456789abcdef01234567"),
        ("CI_PROJECT_DIR", "/builds/releng/scap"),
        ("RELEASE_VERSION", "4.13.0"),
        ("ROLLBACK_TO", "4.12.0-1"),
    ] {
        vars.insert(k.into(), v.into());
    }
    vars
}

/// Every harness call in a job's scripts.
fn calls(job_name: &str, job: &Value, vars: &BTreeMap<String, String>) -> Vec<Call> {
    let vars: BTreeMap<&str, &str> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut found = Vec::new();
    for key in ["before_script", "script", "after_script"] {
        let Some(items) = job.get(key).and_then(Value::as_sequence) else {
            continue;
        };
        for item in items {
            for line in item.as_str().unwrap_or_default().lines() {
                if !line.contains("release-harness ") {
                    continue;
                }
                match cli_line::calls_in(line, &vars) {
                    Ok(calls) => found.extend(calls),
                    Err(e) => panic!("job {job_name}, {key}: {e}"),
                }
            }
        }
    }
    found
}

fn subcommand(call: &Call) -> &'static str {
    match call {
        Call::Cli(cli) => match &cli.command {
            Command::Release(a) if a.dry_run => "release --dry-run",
            Command::Release(a) if a.tagged => "release --tagged",
            Command::Release(_) => "release",
            Command::Bump(_) => "bump",
            Command::Promote(_) => "promote",
            Command::Rollback(_) => "rollback",
            Command::Status(_) => "status",
            Command::Sweep(_) => "sweep",
            _ => "other",
        },
        Call::Help => "help",
        Call::Dist(_) => "dist",
    }
}

#[test]
fn every_harness_call_parses_and_each_job_calls_its_subcommand() {
    let p = pipeline();
    let vars = script_vars(&p);
    let expected = BTreeMap::from([
        ("verify", "release --dry-run"),
        ("bump", "bump"),
        // It runs on the tag `bump` pushed: it must not bump again.
        ("release", "release --tagged"),
        ("promote", "promote"),
        ("rollback", "rollback"),
        ("status", "status"),
    ]);
    let jobs = jobs(&p);
    assert_eq!(
        jobs.keys().map(String::as_str).collect::<Vec<_>>(),
        expected.keys().copied().collect::<Vec<_>>()
    );
    let stages: Vec<&str> = p["stages"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for (name, job) in &jobs {
        let calls = calls(name, job, &vars);
        assert!(!calls.is_empty(), "job {name} calls no release-harness");
        for call in &calls {
            assert_eq!(subcommand(call), expected[name.as_str()], "in job {name}");
        }
        let stage = str_of(job, "stage").unwrap_or("test");
        assert!(
            stages.contains(&stage),
            "job {name}: stage {stage} not in {stages:?}"
        );
    }
}

#[test]
fn production_jobs_never_overlap_and_name_their_environment() {
    let p = pipeline();
    let vars = script_vars(&p);
    let mut production = Vec::new();
    for (name, job) in jobs(&p) {
        let touches_production = calls(&name, &job, &vars).iter().any(|c| {
            matches!(
                subcommand(c),
                "release" | "release --tagged" | "promote" | "rollback"
            )
        });
        if !touches_production {
            assert!(
                job.get("resource_group").is_none(),
                "job {name} holds the production resource group without a production step"
            );
            continue;
        }
        production.push(name.clone());
        assert_eq!(
            str_of(&job, "resource_group"),
            Some("production"),
            "job {name} changes production hosts: it needs resource_group: production"
        );
        let environment = job
            .get("environment")
            .and_then(|e| str_of(e, "name"))
            .unwrap_or_else(|| panic!("job {name} has no environment name"));
        let wanted = if name == "release" {
            "canaries"
        } else {
            "production"
        };
        assert_eq!(environment, wanted, "job {name}");
        assert_eq!(
            job.get("interruptible").and_then(Value::as_bool),
            Some(false),
            "job {name}: a newer pipeline must not cancel a rollout half-way"
        );
        // Production steps commit to the ledger and push it: they need a
        // git identity and a push URL.
        let before: Vec<&str> = job
            .get("before_script")
            .and_then(Value::as_sequence)
            .map(|b| b.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for needed in [
            "git config user.name",
            "git config user.email",
            "git remote set-url --push origin",
        ] {
            assert!(
                before.iter().any(|l| l.contains(needed)),
                "job {name}: before_script needs `{needed}` for the ledger"
            );
        }
    }
    assert_eq!(production, ["promote", "release", "rollback"]);
}

#[test]
fn promote_tolerates_soaking_and_fails_when_blocked() {
    let p = pipeline();
    let promote = &p["promote"];
    let codes: Vec<i64> = promote["allow_failure"]["exit_codes"]
        .as_sequence()
        .expect("promote: allow_failure: exit_codes")
        .iter()
        .map(|c| c.as_i64().unwrap())
        .collect();
    assert_eq!(codes, [i64::from(exit::SOAKING)]);
    assert!(!codes.contains(&i64::from(exit::BLOCKED)));
    assert!(!codes.contains(&i64::from(exit::ERROR)));
}

#[test]
fn the_junit_report_is_where_release_writes_it() {
    let p = pipeline();
    let vars = script_vars(&p);
    let mut checked = 0;
    for (name, job) in jobs(&p) {
        for call in calls(&name, &job, &vars) {
            let Call::Cli(cli) = call else { continue };
            let Command::Release(args) = &cli.command else {
                continue;
            };
            let out = args.out.display().to_string();
            let artifacts = &job["artifacts"];
            assert_eq!(
                str_of(artifacts, "when"),
                Some("always"),
                "job {name}: a failed verify's report is the one to read"
            );
            let junit = str_of(&artifacts["reports"], "junit")
                .unwrap_or_else(|| panic!("job {name}: no artifacts:reports:junit"));
            assert_eq!(junit, format!("{out}/*/junit.xml"), "job {name}");
            // release writes <out>/<package>_<version>/junit.xml.
            let written = Path::new(&out).join("minideploy_0.2.0-1").join("junit.xml");
            assert!(glob_matches(junit, &written.display().to_string()));
            let paths: Vec<&str> = artifacts["paths"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert!(
                paths.contains(&format!("{out}/").as_str()),
                "job {name}: the .deb and reports under {out}/ are artifacts: {paths:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "verify and release");
}

/// The jobs that run `release` give GitLab the tool's coverage: the job's
/// `coverage:` regex finds the total, and only the total, in the verify
/// summary `release` prints; `coverage_report` is the Cobertura file it
/// writes beside junit.xml. A tool that is not measured gives no figure.
#[test]
fn the_coverage_figure_and_report_are_the_ones_release_prints_and_writes() {
    use harness::verify::coverage::{CoverageReport, FileLines, ScenarioCoverage};
    let mut report = CoverageReport::new(vec!["minideploy".into()]);
    report.add(
        "fresh-install",
        ScenarioCoverage {
            lines: [(
                "minideploy/deploy.py".to_string(),
                FileLines {
                    statements: (1..=7).collect(),
                    executed: (1..=5).collect(),
                },
            )]
            .into(),
            import_only: Some(Ok([(
                "minideploy/deploy.py".to_string(),
                FileLines {
                    statements: (1..=7).collect(),
                    executed: (1..=2).collect(),
                },
            )]
            .into())),
            ..ScenarioCoverage::default()
        },
    );
    let summary = format!("verify minideploy 0.2.0-1\n{}", report.summary());
    assert_eq!(report.total.percent, 71.4);
    let not_measured = CoverageReport::unavailable("mytool installs no Python module".into());

    let p = pipeline();
    let vars = script_vars(&p);
    let mut checked = 0;
    for (name, job) in jobs(&p) {
        for call in calls(&name, &job, &vars) {
            let Call::Cli(cli) = call else { continue };
            let Command::Release(args) = &cli.command else {
                continue;
            };
            let pattern = str_of(&job, "coverage")
                .unwrap_or_else(|| panic!("job {name}: no coverage: regex"));
            let pattern = pattern
                .strip_prefix('/')
                .and_then(|p| p.strip_suffix('/'))
                .unwrap_or_else(|| panic!("job {name}: coverage: is written /regex/"));
            // GitLab matches line by line and takes the last match.
            let regex = regex::Regex::new(&format!("(?m){pattern}")).unwrap();
            let figures: Vec<&str> = regex
                .captures_iter(&summary)
                .map(|c| c.get(1).unwrap().as_str())
                .collect();
            assert_eq!(figures, vec!["71.4"], "job {name}:\n{summary}");
            assert!(
                !regex.is_match(&not_measured.summary()),
                "job {name}: {}",
                not_measured.summary()
            );

            let cobertura = &job["artifacts"]["reports"]["coverage_report"];
            assert_eq!(
                str_of(cobertura, "coverage_format"),
                Some("cobertura"),
                "job {name}"
            );
            let path = str_of(cobertura, "path")
                .unwrap_or_else(|| panic!("job {name}: no coverage_report path"));
            let out = args.out.display().to_string();
            // release writes <out>/<package>_<version>/coverage.xml.
            let written = Path::new(&out)
                .join("minideploy_0.2.0-1")
                .join("coverage.xml");
            assert!(
                glob_matches(path, &written.display().to_string()),
                "job {name}: {path}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "verify and release");
}

/// `*` matches within one path component.
fn glob_matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    p.len() == s.len()
        && p.iter().zip(&s).all(|(p, s)| match p.split_once('*') {
            None => p == s,
            Some((pre, post)) => s.starts_with(pre) && s.ends_with(post),
        })
}

/// GitLab's `rules:if` for the forms this file uses: terms joined by `&&`,
/// each `$VAR`, `$VAR == "text"`, `$VAR != "text"` or `$VAR == $OTHER`.
fn rule_if(expression: &str, vars: &BTreeMap<String, String>) -> bool {
    assert!(
        !expression.contains("||") && !expression.contains('('),
        "the test's evaluator knows only `&&`: {expression}"
    );
    let value = |operand: &str| -> String {
        let operand = operand.trim();
        if let Some(name) = operand.strip_prefix('$') {
            vars.get(name).cloned().unwrap_or_default()
        } else {
            operand.trim_matches('"').to_string()
        }
    };
    expression.split("&&").all(|term| {
        if let Some((a, b)) = term.split_once("==") {
            value(a) == value(b)
        } else if let Some((a, b)) = term.split_once("!=") {
            value(a) != value(b)
        } else {
            !value(term).is_empty()
        }
    })
}

/// `when` of the first rule that matches, None when no rule does.
fn when_of(rules: &Value, vars: &BTreeMap<String, String>) -> Option<String> {
    for rule in rules.as_sequence().unwrap() {
        let matches = match str_of(rule, "if") {
            Some(e) => rule_if(e, vars),
            None => true,
        };
        if matches {
            let when = str_of(rule, "when").unwrap_or("on_success");
            return (when != "never").then(|| when.to_string());
        }
    }
    None
}

/// The jobs a pipeline with these variables runs, with their `when`.
fn pipeline_jobs(p: &Value, set: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut vars = defaults(p);
    vars.insert("CI_DEFAULT_BRANCH".into(), "master".into());
    for (k, v) in set {
        vars.insert(k.to_string(), v.to_string());
    }
    if when_of(&p["workflow"]["rules"], &vars).is_none() {
        return BTreeMap::new();
    }
    jobs(p)
        .into_iter()
        .filter_map(|(name, job)| when_of(&job["rules"], &vars).map(|w| (name, w)))
        .collect()
}

#[test]
fn each_kind_of_pipeline_starts_the_right_jobs() {
    let p = pipeline();
    let on_default = [("CI_COMMIT_BRANCH", "master")];
    // (the pipeline, its variables, the jobs it must start with their `when`)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        (
            "the tag `bump` pushes",
            vec![("CI_PIPELINE_SOURCE", "push"), ("CI_COMMIT_TAG", "4.13.0")],
            vec![("release", "on_success"), ("status", "always")],
        ),
        (
            "the release commit `bump` pushes",
            vec![("CI_PIPELINE_SOURCE", "push"), on_default[0]],
            vec![("status", "always")],
        ),
        (
            "a push to another branch",
            vec![
                ("CI_PIPELINE_SOURCE", "push"),
                ("CI_COMMIT_BRANCH", "topic"),
            ],
            vec![],
        ),
        (
            "a merge request",
            vec![("CI_PIPELINE_SOURCE", "merge_request_event")],
            vec![("verify", "on_success")],
        ),
        (
            "the schedule",
            vec![("CI_PIPELINE_SOURCE", "schedule"), on_default[0]],
            vec![("promote", "on_success"), ("status", "always")],
        ),
        (
            "Run pipeline with the default action",
            vec![("CI_PIPELINE_SOURCE", "web"), on_default[0]],
            vec![("status", "always")],
        ),
        (
            "Run pipeline, HARNESS_ACTION=bump",
            vec![
                ("CI_PIPELINE_SOURCE", "web"),
                on_default[0],
                ("HARNESS_ACTION", "bump"),
            ],
            vec![("bump", "on_success"), ("status", "always")],
        ),
        (
            "Run pipeline, HARNESS_ACTION=promote",
            vec![
                ("CI_PIPELINE_SOURCE", "web"),
                on_default[0],
                ("HARNESS_ACTION", "promote"),
            ],
            vec![("promote", "on_success"), ("status", "always")],
        ),
        (
            "Run pipeline, HARNESS_ACTION=rollback",
            vec![
                ("CI_PIPELINE_SOURCE", "web"),
                on_default[0],
                ("HARNESS_ACTION", "rollback"),
            ],
            vec![("rollback", "manual"), ("status", "always")],
        ),
        (
            "Run pipeline on another branch, HARNESS_ACTION=bump",
            vec![
                ("CI_PIPELINE_SOURCE", "web"),
                ("CI_COMMIT_BRANCH", "topic"),
                ("HARNESS_ACTION", "bump"),
            ],
            vec![],
        ),
    ];
    for (what, vars, expected) in cases {
        let got = pipeline_jobs(&p, &vars);
        let expected: BTreeMap<String, String> = expected
            .into_iter()
            .map(|(j, w)| (j.to_string(), w.to_string()))
            .collect();
        assert_eq!(got, expected, "{what}");
    }
}

#[test]
fn the_action_choices_are_the_jobs() {
    let p = pipeline();
    let options: Vec<&str> = p["variables"]["HARNESS_ACTION"]["options"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(
        options[0],
        defaults(&p)["HARNESS_ACTION"],
        "the default comes first"
    );
    assert_eq!(
        defaults(&p)["HARNESS_ACTION"],
        "status",
        "a stray click must not release"
    );
    let jobs = jobs(&p);
    for option in &options {
        assert!(
            jobs.contains_key(*option),
            "HARNESS_ACTION {option} has no job"
        );
    }
    let bumps: Vec<&str> = p["variables"]["RELEASE_BUMP"]["options"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    // Each bump the form offers is one the CLI takes.
    for bump in bumps {
        let argv = ["release-harness", "bump", "--bump", bump];
        assert!(
            <harness::cli::Cli as clap::Parser>::try_parse_from(argv).is_ok(),
            "--bump {bump}"
        );
    }
}

#[test]
fn bump_pushes_the_commit_and_its_tag_in_one_push() {
    let p = pipeline();
    let script: Vec<&str> = p["bump"]["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let push = script
        .iter()
        .find(|l| l.starts_with("git push"))
        .expect("bump pushes");
    // The annotated tag goes with the commit, atomically: the tag starts the
    // release pipeline, and a refused branch push leaves no tag behind.
    for flag in [
        "--atomic",
        "--follow-tags",
        "HEAD:refs/heads/$CI_COMMIT_BRANCH",
    ] {
        assert!(push.contains(flag), "{push}");
    }
    let last = script.last().unwrap();
    assert_eq!(last, push, "the push comes after the bump");
}
