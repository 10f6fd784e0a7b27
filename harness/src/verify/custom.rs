//! Scenarios written in release.toml (`[[verify.custom]]`), for tools that
//! do not sync git revisions: installs, commands checked by exit code and
//! output, hosts stopped and started, in the order written. They run on the
//! fleet the presets use and report through the same `Scenario`; release.toml
//! checked their steps, hosts and placeholders when it was read.

use std::time::Instant;

use anyhow::{Context, Result};
use futures_util::future::join_all;

use crate::config::{
    CustomScenario, CustomStep, ExpectExit, Hosts, On, Release, StepAction, CUSTOM_PLACEHOLDERS,
};
use crate::verify::fleet::{Fleet, Host};
use crate::verify::scenario::{Scenario, VerifyInput};

/// Runs the steps in order. A command that does not answer as expected is a
/// failure and the steps go on, so the report shows every finding; an
/// install, stop or start that fails ends the scenario.
pub(super) async fn run(
    s: &mut Scenario,
    scenario: &CustomScenario,
    fleet: &Fleet,
    input: &VerifyInput<'_>,
) -> Result<()> {
    for (i, step) in scenario.steps.iter().enumerate() {
        let number = i + 1;
        let hosts = hosts_of(fleet, step.on())?;
        let Some(action) = step.action() else {
            // release.toml refuses such a step when it is read.
            anyhow::bail!("step {number} does none of install, run, stop, start");
        };
        match action {
            StepAction::Install(release) => {
                let version = match release {
                    Release::New => &input.new.version,
                    Release::Previous => {
                        &input
                            .previous
                            .context("the previous release's package is not there")?
                            .version
                    }
                };
                s.install(fleet, &hosts, version).await?;
            }
            StepAction::Run(command) => {
                run_command(s, fleet, input, step, number, command, &hosts).await?;
            }
            StepAction::Stop(_) => {
                let t = Instant::now();
                for h in &hosts {
                    fleet.kill_host(h).await?;
                }
                s.took("stop/start", t);
                s.say(format!("step {number}: stopped {}", names(&hosts)));
            }
            StepAction::Start(_) => {
                let t = Instant::now();
                for h in &hosts {
                    fleet.restart_host(h).await?;
                }
                s.took("stop/start", t);
                s.say(format!("step {number}: started {} again", names(&hosts)));
            }
        }
    }
    Ok(())
}

/// The command on every host at once; the findings in host order.
async fn run_command(
    s: &mut Scenario,
    fleet: &Fleet,
    input: &VerifyInput<'_>,
    step: &CustomStep,
    number: usize,
    command: &str,
    hosts: &[&Host],
) -> Result<()> {
    let t = Instant::now();
    let user = match step.user.as_deref() {
        Some("root") => None,
        Some(u) => Some(u),
        None => Some(fleet.user()),
    };
    let expect_exit = step.expect_exit.unwrap_or(ExpectExit::Code(0));
    let timeout = fleet.config.sync.timeout_secs;
    let runs = hosts.iter().map(|h| async move {
        let cmd = render(command, fleet, input, h, false);
        let quoted = shlex::try_quote(&cmd).context("a command with a NUL byte")?;
        let script = format!("timeout -k 5 {timeout} sh -c {quoted} </dev/null");
        let out = fleet.exec(h, user, &script).await?;
        anyhow::Ok((h, cmd, out))
    });
    let results = join_all(runs).await;
    s.took("run", t);
    for result in results {
        let (h, cmd, out) = result?;
        s.say(format!(
            "step {number}: `{cmd}` on {} exited {}",
            h.name, out.code
        ));
        if !expect_exit.accepts(out.code) {
            s.fail(
                &h.name,
                &format!("step {number} `{cmd}`: exit code"),
                &expect_exit.describe(),
                &format!("{}\n{}", out.code, out.tail(12)),
            );
        }
        if let Some(pattern) = &step.expect_output {
            let pattern = render(pattern, fleet, input, h, true);
            // `^` and `$` anchor at lines: a command's output ends in a newline.
            let re = regex::RegexBuilder::new(&pattern)
                .multi_line(true)
                .build()
                .with_context(|| format!("step {number}: expect_output `{pattern}`"))?;
            let output = format!("{}{}", out.stdout, out.stderr);
            if !re.is_match(&output) {
                s.fail(
                    &h.name,
                    &format!("step {number} `{cmd}`: output"),
                    &format!("a match for /{pattern}/"),
                    &out.tail(12),
                );
            }
        }
    }
    Ok(())
}

/// The hosts a step's `on` names (checked when release.toml was read).
fn hosts_of<'f>(fleet: &'f Fleet, on: &str) -> Result<Vec<&'f Host>> {
    match fleet.config.resolve_on(on) {
        Some(On::Role(role)) => Ok(fleet.select(role)),
        Some(On::Host(name)) => Ok(vec![fleet.host(&name)?]),
        None => anyhow::bail!("`{on}` is no role or host of the fleet"),
    }
}

/// Fills in the placeholders (`config::CUSTOM_PLACEHOLDERS`); in a pattern
/// (`literal`) the values are escaped, so a version's dots match dots.
fn render(
    template: &str,
    fleet: &Fleet,
    input: &VerifyInput<'_>,
    host: &Host,
    literal: bool,
) -> String {
    let joined = |role| {
        fleet
            .select(role)
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let vars = [
        ("version", input.new.version.clone()),
        (
            "previous",
            input
                .previous
                .map(|p| p.version.clone())
                .unwrap_or_default(),
        ),
        ("package", fleet.config.package_name().to_string()),
        ("deploy_host", fleet.deploy_host().name.clone()),
        ("targets", joined(Hosts::Targets)),
        ("canaries", joined(Hosts::Canaries)),
        ("apps", joined(Hosts::Apps)),
        ("user", fleet.user().to_string()),
        ("host", host.name.clone()),
    ];
    debug_assert_eq!(vars.each_ref().map(|v| v.0), CUSTOM_PLACEHOLDERS);
    let mut out = template.to_string();
    for (name, value) in vars {
        let value = if literal {
            regex::escape(&value)
        } else {
            value
        };
        out = out.replace(&format!("{{{name}}}"), &value);
    }
    out
}

fn names(hosts: &[&Host]) -> String {
    hosts
        .iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
