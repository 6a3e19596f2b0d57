//! Demo datasets: realistic generated tables for the demo catalogue entries, written as CSV
//! and published by their departments with `huitong dataset publish`.
//!
//! - 人口基本信息 (公安, 有条件共享): 100,000 people with valid 身份证号 (GB 11643 check digit).
//! - 法人基本信息 (市场监管, 无条件共享): 20,000 legal entities with valid USCC (GB 32100).
//! - 12345热线工单信息 (热线, 有条件共享): 50,000 tickets.
//! - 网格事件信息 (数据局, 无条件共享): 30,000 grid events.
//!
//! Generation is seeded, so every testnet gets the same data.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::ids::{id_card_check, uscc, HAIMEN_DIVISION};

/// One demo dataset.
pub struct DemoDataset {
    /// Provider's short key.
    pub provider: &'static str,
    /// Resource code of its catalogue entry.
    pub code: &'static str,
    /// Codes of further entries published over the same file (an 接口 service over the table).
    pub also: &'static [&'static str],
    /// CSV file name.
    pub file: &'static str,
    /// Rows generated.
    pub rows: usize,
    generate: fn(&mut StdRng, usize) -> String,
    header: &'static str,
}

/// The demo datasets.
pub const DATASETS: &[DemoDataset] = &[
    DemoDataset {
        provider: "police",
        code: "101001/000001",
        also: &["101001/000005"],
        file: "population.csv",
        rows: 100_000,
        header: "姓名,公民身份号码,性别,民族,出生日期,户籍地址,现住址,人员状态",
        generate: person,
    },
    DemoDataset {
        provider: "market",
        code: "102001/000001",
        also: &[],
        file: "legal-entities.csv",
        rows: 20_000,
        header: "统一社会信用代码,名称,市场主体类型,法定代表人,注册资本,成立日期,住所,登记状态",
        generate: legal_entity,
    },
    DemoDataset {
        provider: "hotline",
        code: "207001/000001",
        also: &[],
        file: "hotline-tickets.csv",
        rows: 50_000,
        header: "工单编号,受理时间,诉求类型,诉求内容,所属街镇,承办单位,办理状态,办结时间,满意度",
        generate: ticket,
    },
    DemoDataset {
        provider: "hub",
        code: "207002/000001",
        also: &[],
        file: "grid-events.csv",
        rows: 30_000,
        header: "事件编号,上报时间,事件类型,事件描述,所属网格,经度,纬度,处置状态",
        generate: grid_event,
    },
];

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "施", "沈", "顾", "陆", "倪", "季", "茅", "黄",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀英", "桂英", "建华", "志强", "海燕", "晓东", "建国", "春梅", "宇轩", "梓涵", "浩然",
    "欣怡",
];
const TOWNS: &[&str] = &[
    "海门街道",
    "三厂街道",
    "滨江街道",
    "三星镇",
    "常乐镇",
    "悦来镇",
    "四甲镇",
    "余东镇",
    "正余镇",
    "包场镇",
    "临江镇",
    "海永镇",
    "刘浩镇",
];
const ROADS: &[&str] = &[
    "人民路",
    "长江路",
    "解放路",
    "北京路",
    "上海路",
    "南海路",
    "秀山路",
    "东洲路",
    "珠江路",
    "浦江路",
];
const ETHNIC: &[&str] = &[
    "汉族", "汉族", "汉族", "汉族", "汉族", "汉族", "回族", "满族", "壮族", "苗族",
];

fn name(r: &mut StdRng) -> String {
    format!(
        "{}{}",
        SURNAMES.choose(r).unwrap_or(&"王"),
        GIVEN.choose(r).unwrap_or(&"伟")
    )
}

fn address(r: &mut StdRng) -> String {
    format!(
        "江苏省南通市海门区{}{}{}号",
        TOWNS.choose(r).unwrap_or(&"海门街道"),
        ROADS.choose(r).unwrap_or(&"人民路"),
        r.random_range(1..999)
    )
}

fn date(r: &mut StdRng, from_year: i32, to_year: i32) -> (i32, u32, u32) {
    (
        r.random_range(from_year..=to_year),
        r.random_range(1..=12),
        r.random_range(1..=28),
    )
}

fn datetime(r: &mut StdRng) -> String {
    let (y, m, d) = date(r, 2024, 2026);
    format!(
        "{y}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        r.random_range(0..24),
        r.random_range(0..60),
        r.random_range(0..60)
    )
}

/// A valid 身份证号 of someone born in Haimen.
pub fn id_number(r: &mut StdRng, birth: (i32, u32, u32), male: bool) -> String {
    let seq = r.random_range(0..500) * 2 + u32::from(male);
    let first17 = format!(
        "{HAIMEN_DIVISION}{:04}{:02}{:02}{seq:03}",
        birth.0, birth.1, birth.2
    );
    format!("{first17}{}", id_card_check(&first17))
}

fn person(r: &mut StdRng, _i: usize) -> String {
    let birth = date(r, 1930, 2024);
    let male = r.random_bool(0.5);
    let home = address(r);
    let now = if r.random_bool(0.8) {
        home.clone()
    } else {
        address(r)
    };
    let status = ["正常", "正常", "正常", "正常", "迁出", "死亡"]
        .choose(r)
        .copied()
        .unwrap_or("正常");
    format!(
        "{},{},{},{},{}-{:02}-{:02},{home},{now},{status}",
        name(r),
        id_number(r, birth, male),
        if male { "男" } else { "女" },
        ETHNIC.choose(r).unwrap_or(&"汉族"),
        birth.0,
        birth.1,
        birth.2
    )
}

fn legal_entity(r: &mut StdRng, i: usize) -> String {
    let kinds = [
        "有限责任公司",
        "股份有限公司",
        "个人独资企业",
        "合伙企业",
        "农民专业合作社",
    ];
    let trades = [
        "纺织",
        "家纺",
        "机械",
        "电子",
        "建材",
        "物流",
        "食品",
        "船舶配件",
        "新材料",
        "信息技术",
    ];
    let (y, m, d) = date(r, 1995, 2026);
    format!(
        "{},南通{}{}{}有限公司,{},{},{}.00,{y}-{m:02}-{d:02},{},{}",
        uscc(
            "91",
            HAIMEN_DIVISION,
            &format!("{:08}", 30_000_000 + i * 37)
        ),
        ["海门", "东洲", "江海", "通海"]
            .choose(r)
            .unwrap_or(&"海门"),
        trades.choose(r).unwrap_or(&"纺织"),
        i,
        kinds.choose(r).unwrap_or(&"有限责任公司"),
        name(r),
        r.random_range(10..50_000) * 100,
        address(r),
        ["存续", "存续", "存续", "在业", "注销", "吊销"]
            .choose(r)
            .unwrap_or(&"存续")
    )
}

fn ticket(r: &mut StdRng, i: usize) -> String {
    let kinds = ["咨询", "求助", "投诉", "举报", "建议"];
    let topics = [
        "噪音扰民",
        "道路积水",
        "路灯不亮",
        "物业纠纷",
        "医保报销",
        "社保转移",
        "占道经营",
        "垃圾清运",
        "供水异常",
        "拖欠工资",
    ];
    let units = [
        "区住建局",
        "区城管局",
        "区人社局",
        "区医保局",
        "区市场监管局",
        "区生态环境局",
        "区水务局",
    ];
    let done = r.random_bool(0.85);
    format!(
        "HM12345-{i:08},{},{},{}：市民反映{}附近{}，请尽快处理。,{},{},{},{},{}",
        datetime(r),
        kinds.choose(r).unwrap_or(&"咨询"),
        topics.choose(r).unwrap_or(&"道路积水"),
        ROADS.choose(r).unwrap_or(&"人民路"),
        topics.choose(r).unwrap_or(&"道路积水"),
        TOWNS.choose(r).unwrap_or(&"海门街道"),
        units.choose(r).unwrap_or(&"区城管局"),
        if done { "已办结" } else { "办理中" },
        if done { datetime(r) } else { String::new() },
        if done {
            ["满意", "满意", "基本满意", "不满意"]
                .choose(r)
                .unwrap_or(&"满意")
                .to_string()
        } else {
            String::new()
        }
    )
}

fn grid_event(r: &mut StdRng, i: usize) -> String {
    let kinds = [
        "矛盾纠纷",
        "安全隐患",
        "环境卫生",
        "违章搭建",
        "消防通道堵塞",
        "河道污染",
        "特殊人群关爱",
    ];
    let town = TOWNS.choose(r).unwrap_or(&"海门街道");
    format!(
        "WG-{i:08},{},{},{}网格员巡查发现{}，已拍照上报。,{}第{}网格,{:.6},{:.6},{}",
        datetime(r),
        kinds.choose(r).unwrap_or(&"安全隐患"),
        town,
        kinds.choose(r).unwrap_or(&"安全隐患"),
        town,
        r.random_range(1..40),
        121.05 + r.random_range(0.0..0.35),
        31.80 + r.random_range(0.0..0.20),
        ["已处置", "已处置", "处置中", "已上报"]
            .choose(r)
            .unwrap_or(&"已处置")
    )
}

/// Writes one dataset's CSV into `dir`; returns its path.
pub fn write(d: &DemoDataset, dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join(d.file);
    let mut w = BufWriter::new(std::fs::File::create(&path)?);
    writeln!(w, "{}", d.header)?;
    let mut r = StdRng::seed_from_u64(0x0048_5549_544f_4e47 ^ d.code.len() as u64 ^ d.rows as u64);
    for i in 0..d.rows {
        writeln!(w, "{}", (d.generate)(&mut r, i))?;
    }
    w.flush()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_protocol::Uscc;

    #[test]
    fn generated_ids_are_valid() {
        let mut r = StdRng::seed_from_u64(7);
        for i in 0..200 {
            let row = legal_entity(&mut r, i);
            let code = row.split(',').next().unwrap_or_default();
            assert!(Uscc::parse(code).is_ok(), "{code}");
            let id = id_number(&mut r, (1990, 5, 17), i % 2 == 0);
            assert_eq!(id.len(), 18);
            assert_eq!(id.chars().last(), Some(id_card_check(&id[..17])));
        }
    }
}
