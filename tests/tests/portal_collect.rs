//! Collection and subscriptions in the sharing portal (issue #13, point 5), in a real headless
//! Chromium against real nodes: the provider's cataloguer sees the folder source, starts a run
//! and sees it publish version 1, then a malformed file fail with its reason; the auditor sees
//! the history but cannot start a run; a data user of another department subscribes from the
//! entry page, sees version 1 delivered into their own directory, and unsubscribes.

use std::io::Write as _;

use huitong_tests::browser::Driver;
use huitong_tests::{add_user, data, start_prepared};

const CODE: &str = "301001/000071";

fn portal(net: &huitong_testnet::Testnet, i: usize) -> anyhow::Result<String> {
    net.portal_addr(i)
        .map(|a| format!("http://{a}"))
        .ok_or_else(|| anyhow::anyhow!("node {i} has no portal address"))
}

#[test]
fn sources_runs_and_subscriptions_in_the_browser() -> anyhow::Result<()> {
    let inbox = tempfile::tempdir()?;
    let path = inbox.path().to_path_buf();
    let mut f = start_prepared(2, 2, &[], |net| {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(net.nodes[1].dir.join(huitong_config::CONFIG_FILE))?;
        writeln!(
            file,
            "\n[[collect.sources]]\ncode = \"{CODE}\"\nkind = \"folder\"\npath = \"{}\"\n\
             settle_secs = 1\nschedule = \"manual\"",
            path.display()
        )?;
        Ok(())
    })?;
    let mut entry = data::table_entry(&f.net, 1, 71, "无条件共享", None);
    if let Some(item) = entry["items"][4].as_object_mut() {
        item.remove("share_type");
    }
    data::publish_entry(&f.net, f.tmp.path(), 1, &entry)?;
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    let cataloguer_pw = add_user(net, provider, "bianmu", "周编目", "cataloguer")?;
    let auditor_pw = add_user(net, provider, "jiancha", "赵监察", "auditor")?;
    let user_pw = add_user(net, consumer, "shiyong", "王使用", "data_user")?;
    let (provider_url, consumer_url) = (portal(net, provider)?, portal(net, consumer)?);
    data::table_csv(&path.join("people.csv"), 200, 0..0)?;
    std::fs::write(path.join("people.csv.done"), "")?;

    let downloads = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let driver = Driver::start()?;

    // The cataloguer runs the source from the page: version 1 from the file.
    let cataloguer = rt.block_on(driver.browser(downloads.path()))?;
    rt.block_on(async {
        cataloguer
            .sign_in(&provider_url, "bianmu", &cataloguer_pw)
            .await?;
        cataloguer.open(&format!("{provider_url}/collect")).await?;
        let page = cataloguer.wait_text("数据源", false).await?;
        assert!(
            page.contains(CODE) && page.contains("文件夹") && page.contains("仅手动"),
            "{page}"
        );
        assert!(page.contains("还没有运行记录"), "{page}");
        cataloguer.shot("collect-01-sources").await?;
        cataloguer.click("button.run-now").await?;
        cataloguer.wait_text("已开始采集", false).await?;
        let page = cataloguer.wait_text("已发布新版本", true).await?;
        assert!(page.contains("people.csv") && page.contains("v1"), "{page}");
        cataloguer.shot("collect-02-published").await?;
        anyhow::Ok(())
    })?;

    // A malformed file: the run fails and the page says why.
    let mut bad = String::from("编号,姓名,金额,日期,备注\n");
    bad.push_str(&data::table_row(1, ""));
    bad.push_str("\nNO0000000099,多一列,1.00,2026-01-01,备注,多余\n");
    std::fs::write(path.join("broken.csv"), bad)?;
    std::fs::write(path.join("broken.csv.done"), "")?;
    rt.block_on(async {
        cataloguer.open(&format!("{provider_url}/collect")).await?;
        cataloguer.click("button.run-now").await?;
        let page = cataloguer.wait_text("失败", true).await?;
        let error = cataloguer.text_of(".run-error").await?;
        assert!(
            error.contains("broken.csv") && error.contains("row 2"),
            "{error}\n{page}"
        );
        cataloguer.shot("collect-03-failed").await?;
        anyhow::Ok(())
    })?;

    // The auditor reads the history but has no button to start a run.
    let auditor = rt.block_on(driver.browser(downloads.path()))?;
    rt.block_on(async {
        auditor
            .sign_in(&provider_url, "jiancha", &auditor_pw)
            .await?;
        auditor.open(&format!("{provider_url}/collect")).await?;
        let page = auditor.wait_text("运行记录", false).await?;
        assert!(
            page.contains("people.csv") && page.contains("broken.csv"),
            "{page}"
        );
        assert!(!page.contains("立即采集"), "{page}");
        anyhow::Ok(())
    })?;

    // A data user of another department subscribes from the entry page.
    data::wait_version(net, consumer, CODE, 1)?;
    let user = rt.block_on(driver.browser(downloads.path()))?;
    rt.block_on(async {
        user.sign_in(&consumer_url, "shiyong", &user_pw).await?;
        user.open(&format!("{consumer_url}/entry?code=301001%2F000071"))
            .await?;
        user.wait_text("订阅", false).await?;
        user.select("#sub-format", "jsonl").await?;
        user.click("#sub-current").await?;
        user.click("#subscribe").await?;
        let page = user.wait_text("v1 / v1", true).await?;
        assert!(page.contains("已是最新") && page.contains(CODE), "{page}");
        assert!(
            page.contains("shiyong") && page.contains("jsonl"),
            "the person's own directory: {page}"
        );
        user.shot("collect-04-subscribed").await?;
        user.click("button.unsubscribe").await?;
        user.accept_dialog().await?;
        user.wait_text("还没有订阅", false).await?;
        anyhow::Ok(())
    })?;
    Ok(())
}
