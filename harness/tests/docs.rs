//! The documents an operator works from: README.md (its configuration
//! reference names every key of release.toml, its commands parse with the
//! CLI, it starts with the two commands of a fresh clone) and
//! examples/scap/release.toml (scap's layout, parsed here; its fleet is
//! started and checked the way scap would use it when a Docker engine
//! answers).

mod cli_line;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use harness::config::{
    Config, CustomScenario, CustomStep, FleetCommand, FleetFile, GateCheck, Hosts, VersionFile,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md at the workspace root")
}

/// Every key path of release.toml: a Config with one entry in every list and
/// every optional value set, flattened (`fleet.files[].path`).
fn config_key_paths() -> Vec<String> {
    let mut config = Config::default();
    config.package.name = Some("x".into());
    config.package.maintainer = Some("x".into());
    config.package.version_files = Some(vec![VersionFile {
        path: "x/version.py".into(),
        line: "{version}".into(),
    }]);
    config.package.debian_revision = Some("1".into());
    config.package.distribution = Some("unstable".into());
    config.package.urgency = Some("medium".into());
    config.fleet.files.push(FleetFile {
        hosts: Hosts::All,
        path: "/x".into(),
        content: String::new(),
        mode: "0644".into(),
        owner: "root".into(),
    });
    config.fleet.setup.push(FleetCommand {
        hosts: Hosts::All,
        command: "true".into(),
    });
    config.gate.checks.push(GateCheck::Command {
        name: "x".into(),
        command: "true".into(),
    });
    config.gate.checks.push(GateCheck::Prometheus {
        name: "x".into(),
        url: "http://x".into(),
        query: "x".into(),
        op: "<".into(),
        threshold: 1.0,
    });
    config.verify.custom.push(CustomScenario {
        name: "x".into(),
        steps: vec![CustomStep::default()],
    });
    // JSON keeps `None` as null, so an optional key is listed too.
    let value = serde_json::to_value(&config).unwrap();
    let mut paths = std::collections::BTreeSet::new();
    flatten(&value, "", &mut paths);
    paths.into_iter().collect()
}

fn flatten(value: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let is_table = v.is_object()
                    || v.as_array()
                        .is_some_and(|a| a.first().is_some_and(|e| e.is_object()));
                if !prefix.is_empty() {
                    out.insert(path.clone());
                }
                if is_table {
                    flatten(v, &path, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                flatten(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn readme_reference_names_every_release_toml_key() {
    let readme = readme();
    let paths = config_key_paths();
    // The walk itself must see the nested keys, or the check proves nothing.
    for expected in [
        "package.version_files[].line",
        "fleet.files[].owner",
        "gate.checks[].op",
        "verify.custom[].steps[].expect_output",
    ] {
        assert!(paths.contains(&expected.to_string()), "{paths:?}");
    }
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !readme.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's configuration reference does not mention these release.toml keys \
         (write each as `section.key`, list entries as `section.key[].field`): {missing:?}"
    );
}

/// How the README writes a default: `"bookworm"`, `900`, `true`, `0.0`,
/// `["a", "b"]`.
fn render_default(value: &serde_json::Value) -> Option<String> {
    Some(match value {
        serde_json::Value::String(s) => format!("\"{s}\""),
        serde_json::Value::Number(n) if n.is_f64() => format!("{:?}", n.as_f64()?),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Array(items) => {
            let items: Option<Vec<String>> = items.iter().map(render_default).collect();
            format!("[{}]", items?.join(", "))
        }
        _ => return None,
    })
}

#[test]
fn readme_reference_gives_each_default_as_the_code_has_it() {
    let readme = readme();
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (section, keys) in defaults.as_object().unwrap() {
        for (key, value) in keys.as_object().unwrap() {
            let Some(default) = render_default(value) else {
                continue; // no default (None): the README says where it comes from
            };
            let row = format!("| `{section}.{key}` |");
            let Some(line) = readme.lines().find(|l| l.starts_with(&row)) else {
                wrong.push(format!("no reference row for {section}.{key}"));
                continue;
            };
            let cell = line[row.len()..].split(" |").next().unwrap_or_default();
            if !cell.trim_start().starts_with(&format!("`{default}`")) {
                wrong.push(format!(
                    "{section}.{key}: the code's default is `{default}`: {line}"
                ));
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} defaults checked");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn readme_starts_with_the_two_commands_of_a_fresh_clone() {
    let readme = readme();
    let first_block = readme
        .split("```")
        .nth(1)
        .expect("README.md has a code block");
    let lines: Vec<&str> = first_block
        .lines()
        .skip(1) // the rest of the fence line (a language, or nothing)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines,
        ["cargo xtask release --dry-run", "cargo test --workspace"]
    );
    let before: String = readme.split("```").next().unwrap().to_string();
    assert!(
        before.lines().filter(|l| !l.trim().is_empty()).count() <= 2,
        "only the title may come before the first commands:\n{before}"
    );
}

/// Every harness command in README.md's code blocks, with `\` continuations
/// joined and a leading `$ ` dropped.
fn readme_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    for (i, block) in readme.split("```").enumerate() {
        if i % 2 == 0 {
            continue;
        }
        let (fence, body) = block.split_once('\n').unwrap_or((block, ""));
        if matches!(fence.trim(), "toml" | "yaml" | "text" | "json" | "xml") {
            continue;
        }
        let mut current = String::new();
        for line in body.lines() {
            let line = line.trim().trim_start_matches("$ ");
            if let Some(head) = line.strip_suffix('\\') {
                current.push_str(head);
                continue;
            }
            current.push_str(line);
            let command = std::mem::take(&mut current);
            let command = command.split(" #").next().unwrap().trim().to_string();
            if command.contains("release-harness ") || command.contains("cargo xtask ") {
                commands.push(command);
            }
        }
    }
    commands
}

#[test]
fn readme_commands_parse_with_the_cli() {
    let readme = readme();
    let commands = readme_commands(&readme);
    assert!(
        commands.len() >= 8,
        "README.md shows too few harness commands: {commands:?}"
    );
    // Placeholders the README uses for values a reader fills in.
    let vars = BTreeMap::from([
        ("RUN_ID", "1234abcd"),
        ("HOME", "/root"),
        ("PWD", "/src/scap"),
    ]);
    let mut problems = Vec::new();
    for command in &commands {
        match cli_line::calls_in(command, &vars) {
            Ok(calls) if calls.is_empty() => problems.push(format!("no call found in `{command}`")),
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

fn scap_example() -> Config {
    let path = root().join("examples/scap/release.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    Config::parse(&text, &path).unwrap()
}

#[test]
fn scap_example_fits_scaps_layout() {
    let c = scap_example();
    assert_eq!(c.package_name(), "scap");
    assert_eq!(
        c.version_files(),
        [VersionFile {
            path: "scap/version.py".into(),
            line: "__version__ = \"{version}\"".into(),
        }]
    );
    assert_eq!(c.debian_version("4.12.0"), "4.12.0-1");
    assert_eq!(c.tag_for("4.12.0"), "4.12.0");
    assert_eq!(c.build.builder, harness::config::Builder::DpkgBuildpackage);

    let vars = c.template_vars();
    // scap refuses a deploy host whose name does not start with `deploy`,
    // and refuses to run as root.
    assert_eq!(vars["deploy_host"], "deploy1");
    assert_ne!(c.fleet.user, "root");

    let file = |path: &str| -> &FleetFile {
        c.fleet
            .files
            .iter()
            .find(|f| c.render(&f.path, &[]) == path)
            .unwrap_or_else(|| panic!("no fleet file {path}"))
    };
    let etc = file("/etc/scap.cfg");
    assert_eq!(etc.hosts, Hosts::All);
    let etc_text = c.render(&etc.content, &[]);
    assert!(etc_text.contains("git_server: deploy1\n"), "{etc_text}");
    assert!(
        etc_text.contains(&format!("keyholder_key: {}\n", c.fleet.user)),
        "{etc_text}"
    );
    assert_eq!(file("/etc/scap.skip.venv.check").hosts, Hosts::All);

    let repo_dir = c.render(&c.sync.repo_dir, &[]);
    assert_eq!(repo_dir, format!("/srv/deployment/{}", c.sync.repo));
    let cfg = file(&format!("{repo_dir}/scap/scap.cfg"));
    assert_eq!(cfg.hosts, Hosts::Deploy);
    let cfg_text = c.render(&cfg.content, &[]);
    for line in [
        format!("git_repo: {}", c.sync.repo),
        "dsh_targets: targets".into(),
        "server_groups: canary, default".into(),
        "canary_dsh_targets: canaries".into(),
        "git_deploy_dir: /srv/deployment".into(),
    ] {
        assert!(cfg_text.contains(&line), "{line} not in\n{cfg_text}");
    }
    let targets = c.render(&file(&format!("{repo_dir}/scap/targets")).content, &[]);
    assert_eq!(
        targets.lines().collect::<Vec<_>>(),
        ["canary1", "canary2", "app1", "app2", "app3", "app4"]
    );
    let canaries = c.render(&file(&format!("{repo_dir}/scap/canaries")).content, &[]);
    assert_eq!(canaries.lines().collect::<Vec<_>>(), ["canary1", "canary2"]);

    // The keyholder key and the link that puts the repository at the URL
    // scap fetches (http://<git_server>/<git_repo>/.git; the harness serves /srv).
    let setup: Vec<String> = c
        .fleet
        .setup
        .iter()
        .map(|s| c.render(&s.command, &[]))
        .collect();
    let user = &c.fleet.user;
    assert!(
        setup.iter().any(|s| s.contains(&format!(
            "install -m 0600 -o {user} -g {user} {} /etc/keyholder.d/{user}",
            c.render(&c.fleet.ssh_key_path, &[])
        ))),
        "{setup:?}"
    );
    assert!(
        setup
            .iter()
            .any(|s| s == &format!("ln -sfn {repo_dir} /srv/{}", c.sync.repo)),
        "{setup:?}"
    );
    assert_eq!(c.fleet.http_port, 80);

    let sync = c.render(&c.sync.command, &[("revision", "abc123")]);
    assert!(sync.starts_with("scap deploy "), "{sync}");
    assert!(sync.contains("-r abc123"), "{sync}");
    assert_eq!(
        c.render(&c.sync.current_link, &[]),
        format!("/srv/deployment/{}-cache/current", c.sync.repo)
    );
    assert_eq!(
        c.render(&c.sync.revision_command, &[]),
        format!("git -C /srv/deployment/{} rev-parse HEAD", c.sync.repo)
    );
    assert_eq!(c.sync.version_command, "scap version");
    assert_eq!(c.verify.scenarios.len(), 5);
}

/// The scap example's fleet, as scap would find it: its config files, the
/// keyholder key working with scap's own ssh options, known hosts, the
/// repository at the URL scap fetches, writable deploy directories.
#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn scap_example_fleet_is_what_scap_needs() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let config = scap_example();
    let say = |line: &str| eprintln!("  {line}");
    let image = harness::support::images::fleet_image(&docker, &config, &[], &say)
        .await
        .expect("the fleet image");
    let run_id = harness::support::docker::new_run_id();
    let progress = harness::support::progress::Progress::silent();
    let size = harness::verify::fleet::Size {
        canaries: 1,
        apps: 1,
    };
    let launch = harness::verify::fleet::Launch {
        image: &image,
        size,
        run_id: &run_id,
        slot: "scap",
        keep: false,
    };
    let fleet = harness::verify::fleet::Fleet::start(&docker, &config, &launch, &progress)
        .await
        .expect("the scap example's fleet starts");

    let user = config.fleet.user.clone();
    let repo = config.sync.repo.clone();
    // (host, as the user?, script, what its output must contain)
    let checks: Vec<(&str, bool, String, String)> = vec![
        (
            "app1",
            false,
            "cat /etc/scap.cfg".into(),
            "git_server: deploy1".into(),
        ),
        (
            "canary1",
            false,
            "test -e /etc/scap.skip.venv.check && echo present".into(),
            "present".into(),
        ),
        (
            "deploy1",
            false,
            format!("stat -c '%a %U' /etc/keyholder.d/{user}"),
            format!("600 {user}"),
        ),
        // scap's own ssh command line, with the keyholder key and the
        // known hosts the harness wrote.
        (
            "deploy1",
            true,
            format!(
                "ssh -n -oBatchMode=yes -oSetupTimeout=10 -F/dev/null -oIdentitiesOnly=yes \
                 -oIdentityFile=/etc/keyholder.d/{user} -oUser={user} canary1 hostname"
            ),
            "canary1".into(),
        ),
        (
            "canary1",
            false,
            format!("curl -fsS http://deploy1/{repo}/.git/HEAD"),
            "ref: refs/heads/main".into(),
        ),
        (
            "app1",
            false,
            format!("curl -fsS http://deploy1/{repo}/scap/scap.cfg"),
            format!("git_repo: {repo}"),
        ),
        (
            "deploy1",
            true,
            format!("git -C /srv/deployment/{repo} ls-files scap .gitignore"),
            "scap/scap.cfg".into(),
        ),
        (
            "app1",
            true,
            "touch /srv/deployment/.w && echo writable".into(),
            "writable".into(),
        ),
    ];
    let mut failures = Vec::new();
    for (host, as_user, script, want) in &checks {
        let h = fleet.host(host).unwrap();
        let as_user = as_user.then_some(user.as_str());
        match fleet.exec(h, as_user, script).await {
            Ok(out) if out.ok() && out.stdout.contains(want.as_str()) => {}
            Ok(out) => failures.push(format!(
                "on {host}: `{script}` exited {}, wanted `{want}` in:\n{}{}",
                out.code, out.stdout, out.stderr
            )),
            Err(e) => failures.push(format!("on {host}: `{script}`: {e:#}")),
        }
    }
    fleet.teardown().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
