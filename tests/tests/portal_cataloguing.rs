//! People and cataloguing in the portal, in a real headless Chromium against a real testnet
//! (issue #11, points 1, 6 and 12): the administrator creates the cataloguer's account in the
//! portal (separation of duties refused there too) and hands over the generated password; the
//! cataloguer changes it and signs in again; then fills in a new entry with three bad fields and sees three
//! errors, each beside its field, with what was typed kept; fixes them and publishes (the signed
//! entry names the person, and the hub receives it); uploads a CSV with a bad row and sees the
//! refused cell with its row and rule, nothing published; uploads again publishing the other
//! rows and sees the version and its report; edits the title; withdraws the entry with a reason.
//! The other members see each step. At the end the administrator disables the account and the
//! cataloguer's session ends. Screenshots go to `$HUITONG_SCREENSHOTS` when it is set.

use std::io::Write;

use huitong_tests::browser::Driver;
use huitong_tests::{add_user, data, start, wait_until};

fn portal(net: &huitong_testnet::Testnet, i: usize) -> anyhow::Result<String> {
    net.portal_addr(i)
        .map(|a| format!("http://{a}"))
        .ok_or_else(|| anyhow::anyhow!("node {i} has no portal address"))
}

/// The hub's record of `code` from node `i`, once it shows `pred`.
fn wait_record(
    net: &mut huitong_testnet::Testnet,
    i: usize,
    code: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let q: String = code.bytes().map(|b| format!("%{b:02X}")).collect();
    let mut found = serde_json::Value::Null;
    wait_until(std::time::Duration::from_secs(60), what, || {
        let v = net.get(i, &format!("/catalogue?code={q}"))?;
        let r = v["records"][0].clone();
        let ok = pred(&r);
        if ok {
            found = r;
        }
        Ok(ok)
    })?;
    Ok(found)
}

#[test]
fn a_cataloguer_publishes_uploads_edits_and_withdraws_in_the_browser() -> anyhow::Result<()> {
    let mut f = start(1, 2)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (hub, node) = (0, 1);
    let code = "301001/000077";
    let admin_pw = add_user(net, node, "guanli", "周管理", "admin")?;
    let base = portal(net, node)?;
    // 100 rows; row 42 has an amount that is not a number.
    let csv = dir.join("upload.csv");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        writeln!(w, "编号,金额")?;
        for n in 1..=100 {
            let amount = if n == 42 {
                "四十二".to_string()
            } else {
                format!("{n}.5")
            };
            writeln!(w, "B{n:05},{amount}")?;
        }
        w.flush()?;
    }

    let rt = tokio::runtime::Runtime::new()?;
    let driver = Driver::start()?;
    let downloads = tempfile::tempdir()?;
    let admin = rt.block_on(driver.browser(downloads.path()))?;
    let b = rt.block_on(driver.browser(downloads.path()))?;
    let new_pw = "Haimen-Catalogue-2026";
    rt.block_on(async {
        // The administrator creates the account; administrator + approver is refused.
        admin.sign_in(&base, "guanli", &admin_pw).await?;
        admin.click("a[href='/people']").await?;
        admin.wait_text("新建账号", false).await?;
        admin.fill("#account", "bianmu").await?;
        admin.fill("#display_name", "孙编目").await?;
        admin.click("input[name=roles][value=admin]").await?;
        admin.click("input[name=roles][value=approver]").await?;
        admin.click("#create-person").await?;
        let page = admin.wait_text("may not also approve", false).await?;
        assert!(!page.contains("账号已创建"), "{page}");
        admin.click("input[name=roles][value=admin]").await?;
        admin.click("input[name=roles][value=approver]").await?;
        admin.click("input[name=roles][value=cataloguer]").await?;
        admin.click("#create-person").await?;
        admin.wait_text("账号已创建", false).await?;
        let first_pw = admin.text_of("#generated-password").await?;
        admin.shot("21-people").await?;
        // The cataloguer signs in with it and changes it; every session ends.
        b.sign_in(&base, "bianmu", &first_pw).await?;
        b.click("#who").await?;
        b.fill("#old", &first_pw).await?;
        b.fill("#new", new_pw).await?;
        b.fill("#repeat", new_pw).await?;
        b.click("#change-password").await?;
        b.wait_text("账号由本节点的系统管理员", false).await?;
        b.sign_in(&base, "bianmu", new_pw).await?;
        b.click("a[href='/cataloguing']").await?;
        b.wait_text("本部门还没有目录", false).await?;
        b.click("#new-entry").await?;
        b.wait_text("信息资源分类", false).await?;
        // Three bad fields: no title, a malformed code, a character item without a length.
        b.fill("#f-classification", "301001").await?;
        b.fill("#f-code", "301001-77").await?;
        b.fill("#f-abstract", "门户编目测试：低保金发放明细。")
            .await?;
        b.select("#f-format-category", "spreadsheet").await?;
        b.fill("#f-format-type", "csv").await?;
        b.select("#f-share_type", "unconditional").await?;
        b.select("#f-share_mode", "table").await?;
        b.select("#f-open_type", "closed").await?;
        b.select("#f-update_cycle", "monthly").await?;
        b.fill("input[name='items[0].name']", "编号").await?;
        b.select("select[name='items[0].data_type']", "C").await?;
        b.fill("input[name='items[1].name']", "金额").await?;
        b.select("select[name='items[1].data_type']", "N").await?;
        b.shot("22-entry-form").await?;
        b.click("#save").await?;
        let page = b.wait_text("处问题", false).await?;
        b.shot("23-entry-form-errors").await?;
        let summary = b.text_of("#error-summary").await?;
        assert!(summary.contains("本表有 3 处问题"), "{summary}");
        for field in ["#f-title-error", "#f-code-error"] {
            let t = b.text_of(field).await?;
            assert!(!t.is_empty(), "{field} shows no error: {page}");
        }
        let row = b.text_of("tr.row-error").await?;
        assert!(row.contains("长度"), "{row}");
        // What was typed is kept.
        let kept = b
            .client
            .find(fantoccini::Locator::Css("#f-abstract"))
            .await?
            .prop("value")
            .await?
            .unwrap_or_default();
        assert_eq!(kept, "门户编目测试：低保金发放明细。");

        b.fill("#f-title", "门户编目测试表").await?;
        b.fill("#f-code", code).await?;
        b.fill("input[name='items[0].length']", "10").await?;
        b.click("#save").await?;
        let page = b.wait_text("目录已发布", false).await?;
        assert!(
            page.contains("孙编目"),
            "the entry names its cataloguer: {page}"
        );
        assert!(page.contains("本节点已验证签名"), "{page}");
        b.shot("24-entry-published").await?;

        // A row with an amount that is not a number: nothing is published.
        b.click("#upload-version").await?;
        b.wait_text("上传并发布", false).await?;
        b.attach("#file", &csv).await?;
        b.click("#upload").await?;
        b.wait_text("未发布", false).await?;
        let rejects = b.text_of("#reject-table").await?;
        assert!(
            rejects.contains("42") && rejects.contains("金额") && rejects.contains("四十二"),
            "{rejects}"
        );
        b.shot("25-upload-refused").await?;
        // Again, publishing the other rows.
        b.click("#allow-rejects").await?;
        b.attach("#file", &csv).await?;
        b.click("#upload").await?;
        let page = b.wait_text("已发布数据版本 v1", false).await?;
        assert!(page.contains("99"), "99 rows published: {page}");
        assert!(
            page.contains("四十二"),
            "the refused cell is listed: {page}"
        );
        b.text_of("#report-link").await?;
        b.shot("26-upload-published").await?;
        // The entry page previews the first rows of the 无条件共享 table this node holds.
        b.open(&format!("{base}/entry?code=301001%2F000077"))
            .await?;
        let preview = b.text_of("#preview-table").await?;
        assert!(
            preview.contains("B00001") && preview.contains("1.5") && !preview.contains("B00011"),
            "{preview}"
        );
        b.text_of("#usage-table").await?;
        b.shot("28-entry-preview").await?;
        anyhow::Ok(())
    })?;

    // The hub received the entry, naming the person, and the version of 99 rows.
    let r = wait_record(net, hub, code, "the entry on the hub", |r| {
        r["dataset"]["version"].as_u64() == Some(1)
    })?;
    assert_eq!(r["entry"]["title"], "门户编目测试表");
    assert_eq!(r["by"]["account"], "bianmu", "{r}");
    assert_eq!(r["dataset"]["rows"].as_u64(), Some(99), "{r}");
    // The upload itself is not kept in the exchange directory.
    let exchange = net.nodes[node].dir.join("exchange").join("bianmu");
    let left: Vec<_> = std::fs::read_dir(&exchange)?.collect();
    assert!(left.is_empty(), "uploads left behind: {left:?}");

    rt.block_on(async {
        // Edit: the code is fixed, the title changes.
        b.open(&format!("{base}/catalogue/edit?code={}", "301001%2F000077"))
            .await?;
        b.wait_text("编辑目录", false).await?;
        let readonly = b
            .client
            .find(fantoccini::Locator::Css("#f-code"))
            .await?
            .attr("readonly")
            .await?;
        assert!(readonly.is_some(), "the code of an entry cannot be edited");
        b.fill("#f-title", "门户编目测试表（修订）").await?;
        b.click("#save").await?;
        b.wait_text("目录已更新", false).await?;
        // Withdraw, with a reason, confirming once.
        b.click("#withdraw-box summary").await?;
        b.fill("#withdraw-reason", "数据已并入人口综合库").await?;
        b.click("#withdraw").await?;
        b.accept_dialog().await?;
        let page = b.wait_text("目录已下架", false).await?;
        assert!(page.contains("数据已并入人口综合库"), "{page}");
        b.shot("27-entry-withdrawn").await?;
        anyhow::Ok(())
    })?;
    // The administrator disables the account: the cataloguer's session ends at once.
    rt.block_on(async {
        admin.open(&format!("{base}/people/bianmu")).await?;
        admin.click("#disable").await?;
        admin.accept_dialog().await?;
        admin.wait_text("账号已停用", false).await?;
        b.open(&format!("{base}/cataloguing")).await?;
        let page = b.wait_text("账号由本节点的系统管理员", false).await?;
        assert!(!page.contains("新建目录"), "{page}");
        anyhow::Ok(())
    })?;
    let r = wait_record(net, hub, code, "the withdrawal on the hub", |r| {
        r["withdrawn"].is_string()
    })?;
    assert_eq!(r["entry"]["title"], "门户编目测试表（修订）");
    assert_eq!(r["withdrawn"], "数据已并入人口综合库");
    // The version is announced to the hub as well.
    data::wait_version(net, hub, code, 1)?;
    Ok(())
}
