//! The testnet's members: the district hub, real district departments and the city platform.

use huitong_protocol::Role;

use crate::ids::{government_uscc, HAIMEN_DIVISION, NANTONG_DIVISION};

/// One member to create.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// Short key, used as the node directory name.
    pub key: String,
    /// Organisation name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// USCC.
    pub uscc: String,
}

const DEPARTMENTS: &[(&str, &str)] = &[
    ("police", "海门区公安局"),
    ("market", "海门区市场监督管理局"),
    ("health", "海门区卫生健康委员会"),
    ("civil", "海门区民政局"),
    ("land", "海门区自然资源和规划局"),
    ("hotline", "海门区12345政务服务便民热线中心"),
    ("hrss", "海门区人力资源和社会保障局"),
    ("edu", "海门区教育体育局"),
    ("housing", "海门区住房和城乡建设局"),
    ("agri", "海门区农业农村局"),
    ("transport", "海门区交通运输局"),
    ("emergency", "海门区应急管理局"),
    ("justice", "海门区司法局"),
    ("finance", "海门区财政局"),
    ("urban", "海门区城市管理局"),
    ("water", "海门区水务局"),
];

fn spec(key: &str, name: &str, role: Role, division: &str, n: u32) -> MemberSpec {
    MemberSpec {
        key: key.to_owned(),
        name: name.to_owned(),
        role,
        uscc: government_uscc(division, &format!("{:08}", 14_100_000 + n * 7919)),
    }
}

/// The hub, `departments` departments (the first six are the named bodies; more get
/// real names up to 16, then numbered ones) and the city cascade node.
pub fn members(departments: usize) -> Vec<MemberSpec> {
    let mut out = vec![spec("hub", "海门区数据局", Role::Hub, HAIMEN_DIVISION, 0)];
    for i in 0..departments {
        let n = i as u32 + 1;
        match DEPARTMENTS.get(i) {
            Some((k, name)) => out.push(spec(k, name, Role::Department, HAIMEN_DIVISION, n)),
            None => out.push(spec(
                &format!("dept{n:02}"),
                &format!("海门区第{n}部门"),
                Role::Department,
                HAIMEN_DIVISION,
                n,
            )),
        }
    }
    out.push(spec(
        "city",
        "南通市数据局",
        Role::Cascade,
        NANTONG_DIVISION,
        999,
    ));
    out
}
