//! `unhidra config`: defaults, then the file, then `UNHIDRA_*`, then flags.

use std::path::Path;

use crate::helpers::{cli_in, write_config};

/// Runs `unhidra config ARGS` in `cwd` and parses what it prints.
async fn effective(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let mut all = vec!["config"];
    all.extend(args);
    let output = cli_in(Some(cwd), &all, env, None).await;
    toml::from_str(output.ok())
        .unwrap_or_else(|e| panic!("config printed invalid TOML: {e}\n{}", output.stdout))
}

fn get<'a>(config: &'a toml::Table, key: &str) -> &'a str {
    config
        .get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("no {key} in {config:?}"))
}

#[tokio::test]
async fn defaults_file_env_and_flags_layer_in_that_order() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();

    let defaults = effective(cwd, &[], &[]).await;
    assert_eq!(get(&defaults, "data_dir"), "./data");
    assert_eq!(get(&defaults, "listen"), "127.0.0.1:8080");
    assert_eq!(get(&defaults, "metrics_listen"), "127.0.0.1:9091");

    let file = write_config(
        cwd,
        "listen = \"127.0.0.1:1111\"\nmetrics_listen = \"127.0.0.1:2222\"\n",
    );
    let file = file.to_str().unwrap();
    let from_file = effective(cwd, &["--config", file], &[]).await;
    assert_eq!(get(&from_file, "listen"), "127.0.0.1:1111");
    assert_eq!(get(&from_file, "metrics_listen"), "127.0.0.1:2222");
    assert_eq!(get(&from_file, "data_dir"), "./data");

    // The file can also be named by the environment.
    let via_env = effective(cwd, &[], &[("UNHIDRA_CONFIG", file)]).await;
    assert_eq!(get(&via_env, "listen"), "127.0.0.1:1111");

    let env = [("UNHIDRA_LISTEN", "127.0.0.1:3333")];
    let env_wins = effective(cwd, &["--config", file], &env).await;
    assert_eq!(get(&env_wins, "listen"), "127.0.0.1:3333");
    assert_eq!(get(&env_wins, "metrics_listen"), "127.0.0.1:2222");

    let flag_wins = effective(cwd, &["--config", file, "--listen", "127.0.0.1:4444"], &env).await;
    assert_eq!(get(&flag_wins, "listen"), "127.0.0.1:4444");
    assert_eq!(get(&flag_wins, "metrics_listen"), "127.0.0.1:2222");

    let bad = tmp.path().join("typo.toml");
    std::fs::write(&bad, "lisen = \"127.0.0.1:1111\"\n").unwrap();
    let output = cli_in(
        Some(cwd),
        &["config", "--config", bad.to_str().unwrap()],
        &[],
        None,
    )
    .await;
    let message = output.failed();
    assert!(message.contains("unknown field"), "{message}");
    assert!(message.contains("lisen"), "{message}");
}
