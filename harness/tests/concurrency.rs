//! Several harness runs on one engine at once: an image tag wanted by two
//! tasks of one process and by a second process is made once, the others
//! wait and reuse it, and nobody fails.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use harness::config::Config;
use harness::support::images;

/// Set for the second process: the base to build the role image on.
const CHILD_BASE: &str = "RELEASE_HARNESS_TEST_CONCURRENCY_BASE";

/// The second process's line when it is about to build.
const READY: &str = "ready to build";

/// What a role image build said, one line each (`built in`, `up to date`).
async fn build_role(docker: &bollard::Docker, base: &str, said: Arc<Mutex<Vec<String>>>) -> String {
    let say = move |line: &str| said.lock().unwrap().push(line.to_string());
    images::role_image(docker, "fleet", base, &say)
        .await
        .expect("building the role image")
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn one_image_tag_built_at_once_by_two_tasks_and_a_second_process_is_built_once() {
    let Some(docker) = support::docker().await else {
        return;
    };
    // Any image with a shell will do as the base; the fleet image of the
    // default configuration is the one the other tests make anyway.
    let config = Config::parse("", std::path::Path::new("release.toml")).unwrap();
    let quiet = |_: &str| {};
    let existing = images::fleet_image(&docker, &config, &["python3".to_string()], &quiet)
        .await
        .unwrap();
    // A base of its own, so the role image on it is new to the engine.
    let run_id = harness::support::docker::new_run_id();
    let base_repo = "release-harness/test-concurrency-base";
    let base = format!("{base_repo}:{run_id}");
    docker
        .tag_image(
            &existing,
            Some(bollard::query_parameters::TagImageOptions {
                repo: Some(base_repo.to_string()),
                tag: Some(run_id.clone()),
            }),
        )
        .await
        .unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "second_process_builds_the_role_image",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_BASE, &base)
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
        build_role(&docker, &base, said.clone()),
        build_role(&docker, &base, said.clone())
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
    let _ = remove(base.clone()).await;

    assert!(
        child.status.success(),
        "the second process failed:\n{child_out}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    assert_eq!(a, b);
    let child_tag = child_out
        .lines()
        .find_map(|l| l.strip_prefix("role image: "))
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
async fn second_process_builds_the_role_image() {
    let Ok(base) = std::env::var(CHILD_BASE) else {
        return;
    };
    let docker = harness::support::docker::connect().await.unwrap();
    println!("{READY}");
    let said = Arc::new(Mutex::new(Vec::new()));
    let tag = build_role(&docker, &base, said.clone()).await;
    for line in said.lock().unwrap().iter() {
        println!("said: {line}");
    }
    println!("role image: {tag}");
}
