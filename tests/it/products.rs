//! Products: install, uninstall (data retained, endpoint refuses), reinstall.

use serde_json::json;

use crate::harness::{TestEnv, no_args};

#[tokio::test]
async fn uninstall_keeps_data_and_reinstall_brings_it_back() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("products").await;
    let concierge = env.client("/api/mcp", &key).await;
    let crm = env.client("/api/mcp/crm", &key).await;
    let created = crm
        .ok("create_account", json!({ "name": "Kept Corp" }))
        .await;

    let listed = concierge.ok("list_products", no_args()).await;
    let crm_entry = listed["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["product"] == "crm")
        .unwrap()
        .clone();
    assert_eq!(crm_entry["installed"], true);
    assert_eq!(crm_entry["endpoint"], env.url("/api/mcp/crm"));

    concierge
        .ok("uninstall_product", json!({ "product": "crm" }))
        .await;
    // A fresh connection sees the product gone: nothing listed, calls refused.
    let crm_after = env.client("/api/mcp/crm", &key).await;
    assert!(crm_after.tool_names().await.is_empty());
    let refused = crm_after.err("search_accounts", json!({})).await;
    assert_eq!(refused["code"], "forbidden");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not installed")
    );
    let who = concierge.ok("whoami", no_args()).await;
    assert_eq!(who["products"], json!([]));
    assert_eq!(
        concierge
            .err_code("uninstall_product", json!({ "product": "crm" }))
            .await,
        "not_found"
    );

    concierge
        .ok("install_product", json!({ "product": "crm" }))
        .await;
    let back = crm
        .ok("get_account", json!({ "id": created["account"]["id"] }))
        .await;
    assert_eq!(back["account"]["name"], "Kept Corp");
    // Installing again is harmless.
    concierge
        .ok("install_product", json!({ "product": "crm" }))
        .await;
    assert_eq!(
        concierge
            .err_code("install_product", json!({ "product": "erp" }))
            .await,
        "invalid_input"
    );
}

#[tokio::test]
async fn installing_a_product_shows_it_in_whoami() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("install").await;
    let concierge = env.client("/api/mcp", &key).await;
    concierge
        .ok("install_product", json!({ "product": "contacts" }))
        .await;
    let who = concierge.ok("whoami", no_args()).await;
    assert_eq!(who["products"], json!(["contacts", "crm"]));
}
