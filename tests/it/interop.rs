//! Interoperability: the official TypeScript and Python MCP SDKs, clients we did not write, against a
//! real server. Their pinned dependencies are installed by the tests when missing.

use std::path::Path;
use std::process::Command;

use crate::harness::TestEnv;

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn the_typescript_sdk_connects_lists_calls_and_is_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/ts");
    if !have("node") || !have("npm") {
        // A machine without Node.js cannot run this client; CI has it.
        assert!(
            std::env::var("CI").is_err(),
            "CI must have Node.js for the interop test"
        );
        eprintln!("skipping: Node.js is not installed");
        return;
    }
    crate::harness::npm_ci_once(&dir, "@modelcontextprotocol/sdk");
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("interop").await;
    let base = env.base_url.clone();
    let output = tokio::process::Command::new("node")
        .arg("client.mjs")
        .arg(&base)
        .arg(&key)
        .current_dir(&dir)
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "TypeScript SDK client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok:"), "{stdout}");
}

#[tokio::test]
async fn the_python_sdk_connects_lists_calls_and_is_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/py");
    let Some(python) = crate::harness::python_env_once(&dir) else {
        return;
    };
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("interop-py").await;
    let output = tokio::process::Command::new(&python)
        .arg("client.py")
        .arg(&env.base_url)
        .arg(&key)
        .current_dir(&dir)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Python SDK client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok:"), "{stdout}");
}
