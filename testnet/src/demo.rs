//! Demo catalogue entries: realistic resources of the Haimen district bodies, written as the
//! JSON a cataloguer would publish with `huitong catalogue publish`.

use serde_json::{json, Value};

/// Who provides a demo resource (index into the testnet's member list by name).
pub struct DemoEntry {
    /// Provider's short key (see [`crate::members`]).
    pub provider: &'static str,
    /// 分类.
    pub classification: &'static str,
    /// Sequence number in the code.
    pub seq: u32,
    /// 名称.
    pub title: &'static str,
    /// 摘要.
    pub summary: &'static str,
    /// (format category, type).
    pub format: (&'static str, &'static str),
    /// 共享方式.
    pub share_mode: &'static str,
    /// 共享类型 and its condition.
    pub share: (&'static str, &'static str),
    /// 开放属性 and its condition.
    pub open: (&'static str, &'static str),
    /// 更新周期.
    pub cycle: &'static str,
    /// `name:type:length` separated by commas.
    pub items: &'static str,
}

const U: (&str, &str) = ("无条件共享", "");
const CLOSED: (&str, &str) = ("不予开放", "");
const OPEN: (&str, &str) = ("无条件开放", "");

/// The demo entries (37).
pub const ENTRIES: &[DemoEntry] = &[
    DemoEntry { provider: "police", classification: "101001", seq: 1, title: "人口基本信息", summary: "全区户籍人口和常住人口的基本信息，包括姓名、公民身份号码、性别、民族、出生日期、户籍地址等，是人口基础信息库的权威来源。", format: ("数据库", "mysql"), share_mode: "库表", share: ("有条件共享", "用于政务服务事项办理和社会治理，需经数源部门审核，仅提供履职所需字段"), open: CLOSED, cycle: "每日", items: "姓名:C:50,公民身份号码:C:18,性别:C:2,民族:C:20,出生日期:D:8,户籍地址:C:200,现住址:C:200,人员状态:C:10" },
    DemoEntry { provider: "police", classification: "101001", seq: 2, title: "户籍迁移信息", summary: "户口迁入、迁出、变更登记记录，含迁移类型、迁移日期和迁出迁入地。", format: ("数据库", "mysql"), share_mode: "库表", share: ("有条件共享", "用于社会保障、教育入学等业务核验"), open: CLOSED, cycle: "每日", items: "公民身份号码:C:18,姓名:C:50,迁移类型:C:10,迁移日期:D:8,迁出地:C:200,迁入地:C:200" },
    DemoEntry { provider: "police", classification: "101001", seq: 3, title: "流动人口居住登记信息", summary: "在本区居住半年以上流动人口的居住登记与居住证办理信息。", format: ("数据库", "oracle"), share_mode: "库表", share: ("有条件共享", "用于网格化社会治理和公共服务供给"), open: CLOSED, cycle: "每周", items: "公民身份号码:C:18,姓名:C:50,居住地址:C:200,登记日期:D:8,居住证号码:C:30,所属网格:C:50" },
    DemoEntry { provider: "police", classification: "101001", seq: 4, title: "居民身份证办理信息", summary: "居民身份证申领、换领、补领业务办理进度与领取信息。", format: ("数据库", "mysql"), share_mode: "接口", share: U, open: CLOSED, cycle: "实时", items: "受理编号:C:30,公民身份号码:C:18,办理类型:C:10,受理日期:D:8,办理状态:C:10" },
    DemoEntry { provider: "police", classification: "101001", seq: 5, title: "人口身份核验服务", summary: "按公民身份号码查询或核验人口基本信息（如姓名与公民身份号码是否一致），只返回授权的信息项或“一致/不一致”，不整表提供。", format: ("数据库", "mysql"), share_mode: "接口", share: ("有条件共享", "用于政务服务事项办理中核验申请人身份，按授权核验或返回所需字段"), open: CLOSED, cycle: "每日", items: "姓名:C:50,公民身份号码:C:18,性别:C:2,民族:C:20,出生日期:D:8,户籍地址:C:200,现住址:C:200,人员状态:C:10" },
    DemoEntry { provider: "police", classification: "304001", seq: 1, title: "机动车登记信息", summary: "本区登记机动车的号牌、车辆类型、使用性质和登记日期。", format: ("数据库", "mysql"), share_mode: "库表", share: ("有条件共享", "用于交通治理和应急处置"), open: CLOSED, cycle: "每日", items: "号牌号码:C:20,车辆类型:C:20,使用性质:C:20,登记日期:D:8,所有人:C:100" },
    DemoEntry { provider: "market", classification: "102001", seq: 1, title: "法人基本信息", summary: "在本区登记注册的企业法人、个体工商户和农民专业合作社的统一社会信用代码、名称、类型、法定代表人、注册资本、成立日期和住所。", format: ("数据库", "mysql"), share_mode: "库表", share: U, open: OPEN, cycle: "每日", items: "统一社会信用代码:C:18,名称:C:200,市场主体类型:C:50,法定代表人:C:50,注册资本:Y:20,成立日期:D:8,住所:C:200,登记状态:C:10" },
    DemoEntry { provider: "market", classification: "102001", seq: 2, title: "个体工商户登记信息", summary: "个体工商户设立、变更、注销登记信息。", format: ("数据库", "mysql"), share_mode: "库表", share: U, open: OPEN, cycle: "每日", items: "统一社会信用代码:C:18,字号名称:C:200,经营者:C:50,经营范围:M:2000,经营场所:C:200,登记日期:D:8" },
    DemoEntry { provider: "market", classification: "104001", seq: 1, title: "市场监管行政处罚信息", summary: "市场监管领域行政处罚决定书主要内容，依法向社会公示。", format: ("电子表格", "xlsx"), share_mode: "文件", share: U, open: OPEN, cycle: "每周", items: "处罚决定书文号:C:50,当事人名称:C:200,统一社会信用代码:C:18,违法行为类型:C:100,处罚内容:M:2000,处罚日期:D:8" },
    DemoEntry { provider: "market", classification: "205002", seq: 1, title: "食品经营许可证信息", summary: "食品经营许可证核发、延续、变更、注销信息。", format: ("数据库", "mysql"), share_mode: "库表", share: U, open: OPEN, cycle: "每日", items: "许可证编号:C:30,经营者名称:C:200,统一社会信用代码:C:18,经营项目:C:500,有效期至:D:8" },
    DemoEntry { provider: "market", classification: "206001", seq: 1, title: "特种设备登记信息", summary: "电梯、锅炉、压力容器等特种设备使用登记与定期检验信息。", format: ("数据库", "mysql"), share_mode: "库表", share: ("有条件共享", "用于安全生产监管和应急救援"), open: CLOSED, cycle: "每月", items: "设备注册代码:C:30,设备类别:C:20,使用单位:C:200,安装地址:C:200,下次检验日期:D:8" },
    DemoEntry { provider: "health", classification: "202001", seq: 1, title: "出生医学证明信息", summary: "本区助产机构签发的出生医学证明信息，用于户籍登记、社保参保等。", format: ("数据库", "sqlserver"), share_mode: "库表", share: ("有条件共享", "用于出生一件事联办，仅限公安、医保、社保部门"), open: CLOSED, cycle: "每日", items: "出生医学证明编号:C:20,新生儿姓名:C:50,性别:C:2,出生日期:T:14,母亲公民身份号码:C:18,父亲公民身份号码:C:18,助产机构:C:200" },
    DemoEntry { provider: "health", classification: "202001", seq: 2, title: "医疗机构执业许可信息", summary: "医疗机构名称、类别、诊疗科目、执业地址和许可证有效期。", format: ("电子表格", "xlsx"), share_mode: "文件", share: U, open: OPEN, cycle: "每月", items: "医疗机构名称:C:200,登记号:C:30,机构类别:C:50,诊疗科目:M:1000,执业地址:C:200,有效期至:D:8" },
    DemoEntry { provider: "health", classification: "202002", seq: 1, title: "预防接种信息", summary: "儿童预防接种记录，含疫苗名称、剂次、接种日期和接种单位。", format: ("数据库", "oracle"), share_mode: "接口", share: ("有条件共享", "用于入托入学查验，需本人或监护人授权"), open: CLOSED, cycle: "实时", items: "受种者公民身份号码:C:18,疫苗名称:C:100,剂次:I:2,接种日期:D:8,接种单位:C:200" },
    DemoEntry { provider: "health", classification: "202002", seq: 2, title: "严重精神障碍患者信息", summary: "严重精神障碍患者登记和随访管理信息。", format: ("数据库", "oracle"), share_mode: "库表", share: ("不予共享", "《中华人民共和国精神卫生法》第四条：有关单位和个人应当对精神障碍患者的个人信息予以保密"), open: CLOSED, cycle: "每月", items: "患者编号:C:30,公民身份号码:C:18,诊断:C:200,随访日期:D:8" },
    DemoEntry { provider: "health", classification: "202001", seq: 3, title: "医师执业注册信息", summary: "医师执业注册、变更和注销信息。", format: ("电子表格", "xlsx"), share_mode: "文件", share: U, open: OPEN, cycle: "每月", items: "姓名:C:50,执业证书编码:C:30,执业类别:C:20,执业范围:C:100,执业机构:C:200" },
    DemoEntry { provider: "civil", classification: "203001", seq: 1, title: "婚姻登记信息", summary: "结婚登记、离婚登记和补领婚姻登记证信息。", format: ("数据库", "mysql"), share_mode: "库表", share: ("有条件共享", "用于不动产登记、公积金提取等业务核验，需当事人授权"), open: CLOSED, cycle: "每日", items: "登记证字号:C:30,登记类型:C:10,男方公民身份号码:C:18,女方公民身份号码:C:18,登记日期:D:8,登记机关:C:100" },
    DemoEntry { provider: "civil", classification: "203002", seq: 1, title: "最低生活保障对象信息", summary: "城乡低保对象家庭和保障金发放信息。", format: ("数据库", "mysql"), share_mode: "库表", share: ("有条件共享", "用于社会救助联审和精准帮扶"), open: CLOSED, cycle: "每月", items: "户主公民身份号码:C:18,家庭人口数:I:2,保障类别:C:10,月保障金额:Y:12,所属村居:C:100" },
    DemoEntry { provider: "civil", classification: "203003", seq: 1, title: "养老机构信息", summary: "本区养老机构名称、地址、床位数和运营状态。", format: ("电子表格", "xlsx"), share_mode: "文件", share: U, open: OPEN, cycle: "每季度", items: "机构名称:C:200,统一社会信用代码:C:18,地址:C:200,床位数:I:6,运营状态:C:10" },
    DemoEntry { provider: "civil", classification: "102002", seq: 1, title: "社会组织登记信息", summary: "社会团体、民办非企业单位和基金会登记信息。", format: ("数据库", "mysql"), share_mode: "库表", share: U, open: OPEN, cycle: "每月", items: "统一社会信用代码:C:18,名称:C:200,类型:C:20,业务主管单位:C:100,成立日期:D:8" },
    DemoEntry { provider: "civil", classification: "203004", seq: 1, title: "殡葬服务信息", summary: "遗体火化和殡葬服务记录，用于死亡一件事联办和养老金停发核验。", format: ("数据库", "mysql"), share_mode: "库表", share: ("有条件共享", "用于死亡一件事联办"), open: CLOSED, cycle: "每日", items: "逝者公民身份号码:C:18,逝者姓名:C:50,火化日期:D:8,殡仪馆:C:100" },
    DemoEntry { provider: "land", classification: "103001", seq: 1, title: "不动产登记信息", summary: "土地、房屋等不动产权利登记信息，含权利人、坐落、面积和权属状态。", format: ("数据库", "oracle"), share_mode: "库表", share: ("有条件共享", "依据《不动产登记暂行条例》第二十七条，仅限有关国家机关依法查询"), open: CLOSED, cycle: "每日", items: "不动产单元号:C:28,权利人:C:200,坐落:C:200,面积:B:12,权利类型:C:20,登簿日期:D:8" },
    DemoEntry { provider: "land", classification: "103002", seq: 1, title: "国土空间规划成果", summary: "海门区国土空间总体规划和详细规划成果数据。", format: ("图形图像", "shp"), share_mode: "文件", share: U, open: ("有条件开放", "经批准后向申请单位提供，不得转让"), cycle: "每年", items: "" },
    DemoEntry { provider: "land", classification: "103003", seq: 1, title: "基础地理信息底图", summary: "全区1:2000基础地理信息数字线划图与影像底图，用于一张图应用。", format: ("图形图像", "tif"), share_mode: "接口", share: U, open: CLOSED, cycle: "每年", items: "" },
    DemoEntry { provider: "land", classification: "103001", seq: 2, title: "建设用地审批信息", summary: "建设用地预审、农用地转用和土地征收审批信息。", format: ("数据库", "oracle"), share_mode: "库表", share: U, open: OPEN, cycle: "每月", items: "批准文号:C:50,项目名称:C:200,用地面积:B:12,土地用途:C:50,批准日期:D:8" },
    DemoEntry { provider: "land", classification: "103002", seq: 2, title: "土地利用现状数据", summary: "年度国土变更调查土地利用现状图斑数据。", format: ("图形图像", "gdb"), share_mode: "文件", share: U, open: CLOSED, cycle: "每年", items: "" },
    DemoEntry { provider: "hotline", classification: "207001", seq: 1, title: "12345热线工单信息", summary: "12345政务服务便民热线受理的咨询、求助、投诉、举报和建议工单及办理结果，全生命周期跟踪。", format: ("数据库", "mysql"), share_mode: "库表", share: ("有条件共享", "用于工单办理和社会治理分析，来电人信息脱敏后提供"), open: CLOSED, cycle: "实时", items: "工单编号:C:30,受理时间:T:14,诉求类型:C:20,诉求内容:M:4000,所属街镇:C:50,承办单位:C:100,办理状态:C:10,办结时间:T:14,满意度:C:10" },
    DemoEntry { provider: "hotline", classification: "207001", seq: 2, title: "热线知识库", summary: "12345热线政策问答知识库条目。", format: ("自描述格式", "json"), share_mode: "接口", share: U, open: OPEN, cycle: "每周", items: "知识编号:C:30,标题:C:200,答复口径:M:4000,来源单位:C:100,更新日期:D:8" },
    DemoEntry { provider: "hotline", classification: "207001", seq: 3, title: "工单办理满意度回访信息", summary: "工单办结后的满意度回访结果。", format: ("数据库", "mysql"), share_mode: "库表", share: U, open: CLOSED, cycle: "每日", items: "工单编号:C:30,回访时间:T:14,满意度:C:10,不满意原因:C:500" },
    DemoEntry { provider: "hub", classification: "207002", seq: 1, title: "网格事件信息", summary: "网格员上报的社会治理事件，含事件类型、发生地点、所属网格和处置流转全过程，与12345工单联动。", format: ("数据库", "mysql"), share_mode: "库表", share: U, open: CLOSED, cycle: "实时", items: "事件编号:C:30,上报时间:T:14,事件类型:C:50,事件描述:M:2000,所属网格:C:50,经度:B:12,纬度:B:12,处置状态:C:10" },
    DemoEntry { provider: "hub", classification: "105001", seq: 1, title: "电子证照目录", summary: "本区签发的电子证照目录信息，证照类型、持证主体和有效期。", format: ("数据库", "mysql"), share_mode: "接口", share: ("有条件共享", "用于政务服务免证办，需持证人授权"), open: CLOSED, cycle: "实时", items: "证照标识:C:64,证照类型:C:50,持证主体:C:200,持证主体代码:C:18,签发日期:D:8,有效期至:D:8" },
    DemoEntry { provider: "hub", classification: "208001", seq: 1, title: "政务服务事项目录", summary: "全区政务服务事项实施清单，含事项名称、实施主体、办理时限。", format: ("电子表格", "xlsx"), share_mode: "文件", share: U, open: OPEN, cycle: "每月", items: "事项编码:C:40,事项名称:C:200,实施主体:C:100,法定办结时限:I:4,承诺办结时限:I:4" },
    DemoEntry { provider: "hub", classification: "104002", seq: 1, title: "公共信用综合评价信息", summary: "区内市场主体公共信用综合评价结果和信用等级。", format: ("数据库", "mysql"), share_mode: "库表", share: U, open: OPEN, cycle: "每月", items: "统一社会信用代码:C:18,主体名称:C:200,信用等级:C:10,评价日期:D:8" },
    DemoEntry { provider: "city", classification: "104002", seq: 1, title: "南通市企业信用评价结果", summary: "南通市级企业公共信用评价结果，供区级部门跨级订阅使用。", format: ("数据库", "mysql"), share_mode: "库表", share: U, open: OPEN, cycle: "每月", items: "统一社会信用代码:C:18,企业名称:C:200,评价结果:C:10,评价日期:D:8" },
    DemoEntry { provider: "city", classification: "203005", seq: 1, title: "南通市社会保险参保信息", summary: "南通市社会保险参保登记和缴费状态，区级部门可申请跨级订阅。", format: ("数据库", "oracle"), share_mode: "接口", share: ("有条件共享", "用于社会救助、就业服务等业务核验"), open: CLOSED, cycle: "每日", items: "公民身份号码:C:18,姓名:C:50,险种:C:20,参保状态:C:10,参保日期:D:8" },
    DemoEntry { provider: "city", classification: "201001", seq: 1, title: "南通市公共数据开放目录", summary: "南通市公共数据开放平台的开放目录清单。", format: ("自描述格式", "json"), share_mode: "接口", share: U, open: OPEN, cycle: "每周", items: "目录编号:C:40,目录名称:C:200,提供部门:C:100,开放方式:C:20" },
    DemoEntry { provider: "market", classification: "205003", seq: 1, title: "药品零售企业许可信息", summary: "药品经营许可证（零售）核发与变更信息。", format: ("电子表格", "xlsx"), share_mode: "文件", share: U, open: OPEN, cycle: "每月", items: "许可证编号:C:30,企业名称:C:200,统一社会信用代码:C:18,经营范围:C:500,有效期至:D:8" },
];

/// The entry as the JSON a cataloguer writes.
pub fn to_json(e: &DemoEntry, provider_name: &str, provider_code: &str) -> Value {
    let items: Vec<Value> = e
        .items
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut p = s.split(':');
            let name = p.next().unwrap_or_default();
            let t = p.next().unwrap_or("C");
            let len: Option<u32> = p.next().and_then(|l| l.parse().ok());
            json!({"name": name, "data_type": t, "length": len})
        })
        .collect();
    let opt = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
    json!({
        "classification": e.classification,
        "title": e.title,
        "code": format!("{}/{:06}", e.classification, e.seq),
        "provider_name": provider_name,
        "provider_code": provider_code,
        "abstract": e.summary,
        "format": {"category": e.format.0, "type": e.format.1},
        "items": items,
        "share_type": e.share.0,
        "share_condition": opt(e.share.1),
        "share_mode": e.share_mode,
        "open_type": e.open.0,
        "open_condition": opt(e.open.1),
        "update_cycle": e.cycle,
        "publish_date": "2026-11-01",
        "related_codes": [],
    })
}
