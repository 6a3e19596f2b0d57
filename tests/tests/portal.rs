//! The sharing portal in a real headless Chromium against a real testnet (issue #11, point 12):
//! a data user signs in on the consumer's portal, sees the provider's preview of an 无条件共享
//! table it does not hold, finds a 有条件共享 table and applies for three
//! 信息项; the provider's approver approves two of them on the provider's portal; the data user
//! pulls the granted columns, watches the pull finish, sees the receipt and downloads the file;
//! the hub's auditor finds the receipt, naming the person, and the application's records. A
//! wrong role is refused in the page (the provider's auditor cannot open the approver's inbox)
//! and on the API (the data user cannot publish). The hub's statistics count the pull and the
//! application, and export the table as CSV. Screenshots of every page go to
//! `$HUITONG_SCREENSHOTS` when it is set.

use std::time::{Duration, Instant};

use huitong_tests::browser::{Driver, PAGE_WAIT};
use huitong_tests::workflow::wait_state;
use huitong_tests::{add_user, data, start};
use serde_json::json;

/// The portal's base URL of node `i`.
fn portal(net: &huitong_testnet::Testnet, i: usize) -> anyhow::Result<String> {
    net.portal_addr(i)
        .map(|a| format!("http://{a}"))
        .ok_or_else(|| anyhow::anyhow!("node {i} has no portal address"))
}

#[test]
fn apply_approve_pull_download_and_audit_in_the_browser() -> anyhow::Result<()> {
    let mut f = start(2, 2)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (hub, provider, consumer) = (0, 1, 2);
    let code = "301001/000061";
    data::publish_table_entry(net, &dir, provider, 61, "有条件共享", Some("仅限低保核验"))?;
    let csv = data::table_csv(&dir.join("t.csv"), 500, 0..0)?;
    data::publish(net, provider, code, &csv, &[])?;
    // An 无条件共享 table the consumer does not hold: its entry page asks the provider for a
    // preview.
    data::publish_table_entry(net, &dir, provider, 62, "无条件共享", None)?;
    data::publish(net, provider, "301001/000062", &csv, &[])?;
    data::wait_version(net, consumer, code, 1)?;
    data::wait_version(net, consumer, "301001/000062", 1)?;

    let user_pw = add_user(net, consumer, "shiyong", "王使用", "data_user")?;
    let approver_pw = add_user(net, provider, "shenpi", "李审批", "approver")?;
    let auditor_pw = add_user(net, provider, "jiancha", "赵监察", "auditor")?;
    let hub_auditor_pw = add_user(net, hub, "shenji", "钱审计", "auditor")?;
    let (consumer_url, provider_url, hub_url) = (
        portal(net, consumer)?,
        portal(net, provider)?,
        portal(net, hub)?,
    );
    let downloads = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let driver = Driver::start()?;

    // The data user applies for three items on the consumer's portal.
    let user = rt.block_on(driver.browser(downloads.path()))?;
    let id = rt.block_on(async {
        user.open(&format!("{consumer_url}/catalogue")).await?;
        // Not signed in: sent to the sign-in page.
        user.wait_text("账号", false).await?;
        user.shot("01-login").await?;
        user.sign_in(&consumer_url, "shiyong", &user_pw).await?;
        user.shot("02-home").await?;
        user.open(&format!("{consumer_url}/catalogue?q={}", "交换测试表61"))
            .await?;
        user.wait_text("交换测试表61", false).await?;
        user.shot("03-catalogue").await?;
        user.click("article.card h3 a").await?;
        user.wait_text("来源与签名", false).await?;
        let page = user.text().await?;
        assert!(page.contains("本节点已验证签名"), "{page}");
        assert!(page.contains("仅限低保核验"), "{page}");
        user.shot("04-entry").await?;
        // The preview of a table this node does not hold comes from the provider's node: the
        // first 10 rows, without 备注 (有条件共享 inside an 无条件共享 entry).
        user.open(&format!("{consumer_url}/entry?code=301001%2F000062"))
            .await?;
        // The first ask may time out while the nodes connect; the page says so and asks again
        // after a while.
        user.wait_text("NO0000000009", true).await?;
        let preview = user.text_of("#preview-table").await?;
        assert!(
            preview.contains("NO0000000000")
                && preview.contains("NO0000000009")
                && !preview.contains("NO0000000010")
                && !preview.contains("备注"),
            "{preview}"
        );
        user.shot("04-entry-remote-preview").await?;
        user.open(&format!("{consumer_url}/catalogue?q={}", "交换测试表61"))
            .await?;
        user.click("article.card h3 a").await?;
        user.wait_text("来源与签名", false).await?;
        user.click("#apply").await?;
        user.wait_text("申请的信息项", false).await?;
        for item in ["编号", "姓名", "金额"] {
            user.click(&format!("input[name=fields][value=\"{item}\"]"))
                .await?;
        }
        user.fill("#purpose", "低保审核核验").await?;
        user.fill("#basis", "《社会救助暂行办法》第十一条").await?;
        user.shot("05-apply").await?;
        user.click("#submit-application").await?;
        user.wait_text("办理过程", false).await?;
        user.shot("06-application").await?;
        let url = user.client.current_url().await?;
        let id = url
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        anyhow::Ok(id)
    })?;
    assert_eq!(id.len(), 32, "application id from the page's URL: {id:?}");
    wait_state(net, provider, "--incoming", &id, "accepted")?;

    // The provider's auditor may not decide: refused in the page.
    let auditor = rt.block_on(driver.browser(downloads.path()))?;
    rt.block_on(async {
        auditor
            .sign_in(&provider_url, "jiancha", &auditor_pw)
            .await?;
        auditor.open(&format!("{provider_url}/inbox")).await?;
        let page = auditor.wait_text("无权操作", false).await?;
        assert!(page.contains("审批人"), "{page}");
        auditor.shot("07-refused").await?;
        auditor.client.clone().close().await?;
        anyhow::Ok(())
    })?;

    // The approver approves two of the three items on the provider's portal.
    let approver = rt.block_on(driver.browser(downloads.path()))?;
    rt.block_on(async {
        approver
            .sign_in(&provider_url, "shenpi", &approver_pw)
            .await?;
        // The new application is among the approver's notifications, counted in the nav.
        approver
            .open(&format!("{provider_url}/notifications"))
            .await?;
        let page = approver.wait_text("新的申请", false).await?;
        assert!(page.contains("301001/000061"), "{page}");
        approver.open(&format!("{provider_url}/inbox")).await?;
        approver.wait_text("301001/000061", false).await?;
        approver.shot("08-inbox").await?;
        approver
            .open(&format!("{provider_url}/applications/{id}"))
            .await?;
        approver.wait_text("审批", false).await?;
        approver
            .click("#approve-form input[name=fields][value=\"金额\"]")
            .await?;
        // A call quota of the grant's own (the form's optional field).
        approver.fill("#calls-per-day", "500").await?;
        approver.shot("09-decide").await?;
        approver.click("#approve").await?;
        approver.wait_text("已批准。", false).await?;
        approver.shot("10-approved").await?;
        approver.client.clone().close().await?;
        anyhow::Ok(())
    })?;
    wait_state(net, consumer, "--outgoing", &id, "granted")?;

    // The data user pulls under the grant, sees the receipt, downloads the file.
    let file = rt.block_on(async {
        user.open(&format!("{consumer_url}/applications/{id}"))
            .await?;
        let page = user.wait_text("已授权", true).await?;
        assert!(
            page.contains("李审批"),
            "the timeline names the approver: {page}"
        );
        assert!(
            page.contains("每日至多 500 次调用"),
            "the approved scope names the grant's call quota: {page}"
        );
        user.shot("11-granted").await?;
        // The decision reached the data user's notifications.
        user.open(&format!("{consumer_url}/notifications")).await?;
        let page = user.wait_text("已授权，可以拉取", true).await?;
        assert!(page.contains("301001/000061"), "{page}");
        user.shot("16-notifications").await?;
        user.open(&format!(
            "{consumer_url}/entry?code=301001%2F000061&provider={}",
            net.nodes[provider].uscc
        ))
        .await?;
        user.wait_text("拉取数据", false).await?;
        user.click("#pull").await?;
        let page = user.wait_text("回执", true).await?;
        assert!(page.contains("编号、姓名"), "{page}");
        assert!(!page.contains("编号、姓名、金额"), "{page}");
        user.shot("12-pull").await?;
        user.click("#download").await?;
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let done: Vec<_> = std::fs::read_dir(downloads.path())?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "csv"))
                .collect();
            if let Some(p) = done.first() {
                break anyhow::Ok(p.clone());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no download within {PAGE_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })?;
    let name = file.file_name().unwrap_or_default();
    let pulled = net.nodes[consumer].dir.join("exchange/shiyong").join(name);
    assert!(
        data::same_bytes(&file, &pulled)?,
        "the download is the pulled file {}",
        pulled.display()
    );
    let text = std::fs::read_to_string(&file)?;
    assert!(
        text.starts_with("编号,姓名\n"),
        "{}",
        &text[..text.len().min(80)]
    );
    assert_eq!(text.lines().count(), 501);

    // The hub's auditor finds the receipt naming the person, and the application's records.
    let hub_auditor = rt.block_on(driver.browser(downloads.path()))?;
    rt.block_on(async {
        hub_auditor
            .sign_in(&hub_url, "shenji", &hub_auditor_pw)
            .await?;
        hub_auditor
            .open(&format!("{hub_url}/audit?code=301001/000061"))
            .await?;
        let page = hub_auditor.wait_text("王使用 (shiyong)", true).await?;
        assert!(page.contains("301001/000061 v1"), "{page}");
        hub_auditor.shot("13-audit").await?;
        hub_auditor
            .open(&format!("{hub_url}/audit?record={id}"))
            .await?;
        hub_auditor.wait_text("下载证明", true).await?;
        hub_auditor.shot("14-audit-record").await?;
        // The hub's statistics cover the federation: the pull and the application counted,
        // the table exported as CSV.
        hub_auditor.open(&format!("{hub_url}/statistics")).await?;
        hub_auditor.wait_text("统计覆盖全网", false).await?;
        let resources = hub_auditor.text_of("#table-resources").await?;
        assert!(resources.contains("301001/000061"), "{resources}");
        assert!(resources.contains("交换测试表61"), "{resources}");
        let states = hub_auditor.text_of("#table-applications").await?;
        assert!(states.contains("已授权"), "{states}");
        hub_auditor.shot("15-statistics").await?;
        hub_auditor
            .click("#table-resources a[href*='format=csv']")
            .await?;
        let deadline = Instant::now() + PAGE_WAIT;
        let csv = loop {
            let found = std::fs::read_dir(downloads.path())?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("huitong-resources-"))
                        && p.extension().is_some_and(|x| x == "csv")
                });
            if let Some(p) = found {
                break p;
            }
            anyhow::ensure!(Instant::now() < deadline, "no statistics export");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let text = std::fs::read_to_string(&csv)?;
        let row = text
            .lines()
            .find(|l| l.starts_with("301001/000061,"))
            .unwrap_or_default();
        // Code, title, provider, pulls 1, bytes, consumers 1, applications 1.
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), 7, "{text}");
        assert_eq!((cells[3], cells[5], cells[6]), ("1", "1", "1"), "{text}");
        hub_auditor.client.clone().close().await?;
        user.client.clone().close().await?;
        anyhow::Ok(())
    })?;

    // The same refusal on the API: a data user cannot publish.
    let login = net.call(
        consumer,
        "POST",
        "/login",
        Some(""),
        Some(&json!({"account": "shiyong", "password": user_pw})),
    )?;
    let token = login.body["token"].as_str().unwrap_or_default().to_string();
    let entry = data::table_entry(net, consumer, 62, "无条件共享", None);
    let a = net.call(consumer, "POST", "/catalogue", Some(&token), Some(&entry))?;
    assert_eq!(a.status, 403, "{}", a.body);
    Ok(())
}
