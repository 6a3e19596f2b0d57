//! Ranked catalogue search on a real node (issue #11, point 3): results come by relevance (a
//! word in the title before one in the abstract), every word must match, a person finds what
//! was just published on the same node (after a bulk import too, while the index waits for the
//! catch-up), a withdrawn entry is not found, and after a restart the index is rebuilt from the
//! store and answers the same.

use huitong_tests::{entry, search, start, wait_until};
use serde_json::json;

#[test]
fn search_is_ranked_fresh_and_rebuilt_at_start() -> anyhow::Result<()> {
    let mut f = start(1, 2)?;
    let net = &mut f.net;
    let node = 1;
    let mut a = entry(net, node, 1, "环境数据汇总");
    a["abstract"] = json!("含一项水质监测指标的汇总表。");
    let mut b = entry(net, node, 2, "水质监测站点数据");
    b["abstract"] = json!("全区水质监测站点的监测结果，按水质类别统计。");
    let mut c = entry(net, node, 3, "水质类别目录");
    c["abstract"] = json!("水质分类标准，不含测量值。");
    let r = net.post(node, "/catalogue/batch", &json!({ "entries": [a, b, c] }))?;
    assert_eq!(r["published"], 3, "{r}");

    // Found at once on the same node (the search waits for what was noted before it), the
    // entry with the words in its title first, the one without 监测 not at all.
    let titles = search(net, node, "水质监测")?;
    assert_eq!(
        titles,
        vec!["水质监测站点数据".to_string(), "环境数据汇总".to_string()],
        "ranked by relevance"
    );
    assert_eq!(search(net, node, "水质 类别")?.len(), 2);
    assert!(search(net, node, "水质 不存在的词")?.is_empty());

    // Withdrawn: no longer found.
    let w = net.post(
        node,
        "/catalogue/withdraw",
        &json!({"code": "301001/000002", "reason": "合并"}),
    )?;
    assert_eq!(w["event"], "withdrawn", "{w}");
    assert_eq!(
        search(net, node, "水质监测")?,
        vec!["环境数据汇总".to_string()]
    );
    // 水质 in a title ranks before 水质 in an abstract (the store's word index would list them
    // by code: 000001 first).
    let ranked = vec!["水质类别目录".to_string(), "环境数据汇总".to_string()];
    assert_eq!(search(net, node, "水质")?, ranked);

    // Another member finds the entries once they arrive, ranked the same way.
    let hub = 0;
    wait_until(
        std::time::Duration::from_secs(60),
        "the entries on the hub",
        || Ok(search(net, hub, "水质")?.len() == 2),
    )?;

    // A bulk import (1,200 entries): the ranked index waits for the catch-up to end, but a
    // search right after it still finds the last entry (a waiting search does not let the index
    // wait), and `status` shows nothing left to index soon after.
    let bulk: Vec<_> = (100..1300u32)
        .map(|n| entry(net, node, n, &format!("批量目录{n}号")))
        .collect();
    let r = net.post(node, "/catalogue/batch", &json!({ "entries": bulk }))?;
    assert_eq!(r["published"], 1200, "{r}");
    assert_eq!(search(net, node, "批量目录1299号")?, vec!["批量目录1299号"]);
    wait_until(
        std::time::Duration::from_secs(60),
        "the ranked index to hold the import",
        || Ok(net.get(node, "/status")?["search_pending"] == 0),
    )?;
    assert_eq!(search(net, node, "批量目录1234号")?, vec!["批量目录1234号"]);

    // Restarted: the index is rebuilt from the store.
    net.stop(node, false)?;
    net.start(node)?;
    wait_until(
        std::time::Duration::from_secs(60),
        "ranked search after a restart",
        || Ok(search(net, node, "水质").unwrap_or_default() == ranked),
    )?;
    let dir = net.nodes[node].dir.join("search");
    assert!(dir.is_dir(), "no index at {}", dir.display());
    Ok(())
}
