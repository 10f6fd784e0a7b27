//! Several harness runs on one engine at once: an image tag wanted by two
//! tasks of one process and by a second process is made once, the others
//! wait and reuse it, and nobody fails.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use harness::support::images;

/// Set for the second process: the package relation of the image to make.
const CHILD_PACKAGE: &str = "RELEASE_HARNESS_TEST_CONCURRENCY_PACKAGE";

/// The second process's line when it is about to build.
const READY: &str = "ready to build";

/// What making the image said, one line each (`built in`, `up to date`).
async fn build_image(
    docker: &bollard::Docker,
    package: &str,
    said: Arc<Mutex<Vec<String>>>,
) -> String {
    let say = move |line: &str| said.lock().unwrap().push(line.to_string());
    images::base_image(docker, "bookworm", &[package.to_string()], &say)
        .await
        .expect("making the image")
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn one_image_tag_built_at_once_by_two_tasks_and_a_second_process_is_built_once() {
    let Some(docker) = support::docker().await else {
        return;
    };
    // A small image of its own: a version every `hello` meets, naming the
    // run, so its tag is new to the engine.
    let run_id = harness::support::docker::new_run_id();
    let package = format!("hello (>= 0~{run_id})");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "second_process_makes_the_image",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_PACKAGE, &package)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Start when the second process is about to ask for the tag too, so the
    // three really want it at once.
    let mut child_stdout = BufReader::new(child.stdout.take().unwrap());
    let child_stdout = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        while child_stdout.read_line(&mut line).unwrap() > 0 && !line.contains(READY) {
            line.clear();
        }
        child_stdout
    })
    .await
    .unwrap();
    let said = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = tokio::join!(
        build_image(&docker, &package, said.clone()),
        build_image(&docker, &package, said.clone())
    );
    let (child, child_out) = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let mut child_stdout = child_stdout;
        child_stdout.read_to_string(&mut rest).unwrap();
        (child.wait_with_output().unwrap(), rest)
    })
    .await
    .unwrap();

    // Clean up before asserting: no stray tag, whatever happened.
    let remove = |tag: String| {
        let docker = docker.clone();
        async move {
            docker
                .remove_image(
                    &tag,
                    Some(
                        bollard::query_parameters::RemoveImageOptionsBuilder::new()
                            .force(true)
                            .build(),
                    ),
                    None,
                )
                .await
        }
    };
    let _ = remove(a.clone()).await;
    let _ = std::fs::remove_file(images::tag_lock_path(&a));

    assert!(
        child.status.success(),
        "the second process failed:\n{child_out}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    assert_eq!(a, b);
    let child_tag = child_out
        .lines()
        .find_map(|l| l.strip_prefix("image: "))
        .unwrap_or_else(|| panic!("the second process printed no tag:\n{child_out}"));
    assert_eq!(child_tag, a);
    let mut lines = said.lock().unwrap().clone();
    lines.extend(
        child_out
            .lines()
            .filter(|l| l.starts_with("said: "))
            .map(|l| l[6..].to_string()),
    );
    let builds = lines.iter().filter(|l| l.contains(": built in")).count();
    let reused = lines.iter().filter(|l| l.ends_with(": up to date")).count();
    assert_eq!(
        (builds, reused),
        (1, 2),
        "one build, two waits that found the image: {lines:#?}"
    );
}

/// The second process of the test above (the test binary run again); does
/// nothing when run on its own.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the second process of one_image_tag_built_at_once_..."]
async fn second_process_makes_the_image() {
    let Ok(package) = std::env::var(CHILD_PACKAGE) else {
        return;
    };
    let docker = harness::support::docker::connect().await.unwrap();
    println!("{READY}");
    let said = Arc::new(Mutex::new(Vec::new()));
    let tag = build_image(&docker, &package, said.clone()).await;
    for line in said.lock().unwrap().iter() {
        println!("said: {line}");
    }
    println!("image: {tag}");
}

/// Two dry runs of two projects on one engine at once: both pass, and neither
/// leaves a container or a network (each is told apart by its owner label,
/// so a sweep of one never takes the other's fleet).
#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn two_dry_runs_of_two_projects_at_once_both_pass_and_leave_nothing() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let (_a, repo_a) = support::fixture_repo("minideploy");
    let (_b, repo_b) = support::fixture_repo("minideploy");
    let out = tempfile::tempdir().unwrap();
    let start = |repo: &std::path::Path, name: &str| {
        Command::new(env!("CARGO_BIN_EXE_release-harness"))
            .args([
                "release",
                "--dry-run",
                "--scenario",
                "fresh-install",
                "--project",
            ])
            .arg(repo)
            .arg("--out")
            .arg(out.path().join(name))
            .env("CI", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let runs = [start(&repo_a, "a"), start(&repo_b, "b")];
    let host = harness::support::docker::owner();
    let host = host.split(':').next().unwrap().to_string();
    let owners: Vec<String> = runs
        .iter()
        .map(|c| {
            format!(
                "{}={host}:{}",
                harness::support::docker::LABEL_OWNER,
                c.id()
            )
        })
        .collect();
    let done = tokio::task::spawn_blocking(move || runs.map(|c| c.wait_with_output().unwrap()))
        .await
        .unwrap();
    for (output, owner) in done.iter().zip(&owners) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "a dry run failed:\n{stderr}");
        assert!(stderr.contains("fresh-install"), "{stderr}");
        assert_eq!(
            support::labelled(&docker, owner).await,
            (0, 0),
            "containers or networks left by {owner}"
        );
    }
}
