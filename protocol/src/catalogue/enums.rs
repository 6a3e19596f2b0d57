//! The enumerations of a catalogue entry, each with its English key (the stored form) and its
//! Chinese label (accepted on input, shown to people).

use serde::{Deserialize, Serialize};

/// An enumeration that parses from its English key or Chinese label.
pub trait Labelled: Sized + Copy {
    /// What it is called in error messages.
    const WHAT: &'static str;
    /// Parses the key or the label.
    fn parse(s: &str) -> Option<Self>;
    /// The accepted values, for error messages.
    fn expected() -> String;
}

macro_rules! labelled_enum {
    ($(#[$doc:meta])* $name:ident ($what:literal) { $($(#[$vdoc:meta])* $variant:ident = $key:literal, $label:literal;)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $key)] $variant,)+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Parses the English key or the Chinese label.
            pub fn parse(s: &str) -> Option<Self> {
                let s = s.trim();
                Self::ALL.iter().copied().find(|v| v.key() == s || v.label() == s)
            }

            /// The stored (English) key.
            pub fn key(self) -> &'static str {
                match self { $($name::$variant => $key,)+ }
            }

            /// The Chinese label.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)+ }
            }

            /// "a (甲), b (乙)" for error messages; single-letter codes as "C N Y …".
            pub fn expected() -> String {
                if Self::ALL.iter().all(|v| v.key().len() == 1) {
                    return Self::ALL.iter().map(|v| v.key()).collect::<Vec<_>>().join(" ");
                }
                Self::ALL.iter().map(|v| format!("{} ({})", v.key(), v.label())).collect::<Vec<_>>().join(", ")
            }
        }

        impl Labelled for $name {
            const WHAT: &'static str = $what;
            fn parse(s: &str) -> Option<Self> {
                $name::parse(s)
            }
            fn expected() -> String {
                $name::expected()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.key())
            }
        }
    };
}

labelled_enum!(
    /// 共享类型.
    ShareType ("share type") {
        /// 无条件共享.
        Unconditional = "unconditional", "无条件共享";
        /// 有条件共享.
        Conditional = "conditional", "有条件共享";
        /// 不予共享.
        None = "none", "不予共享";
    }
);

labelled_enum!(
    /// 开放属性.
    OpenType ("open type") {
        /// 无条件开放.
        Open = "open", "无条件开放";
        /// 有条件开放.
        Conditional = "conditional", "有条件开放";
        /// 不予开放.
        Closed = "closed", "不予开放";
    }
);

labelled_enum!(
    /// 共享方式 (via the platform).
    ShareMode ("share mode") {
        /// 库表.
        Table = "table", "库表";
        /// 文件.
        File = "file", "文件";
        /// 接口.
        Api = "api", "接口";
    }
);

labelled_enum!(
    /// 更新周期.
    UpdateCycle ("update cycle") {
        /// 实时.
        Realtime = "realtime", "实时";
        /// 每日.
        Daily = "daily", "每日";
        /// 每周.
        Weekly = "weekly", "每周";
        /// 每月.
        Monthly = "monthly", "每月";
        /// 每季度.
        Quarterly = "quarterly", "每季度";
        /// 每半年.
        HalfYearly = "half_yearly", "每半年";
        /// 每年.
        Yearly = "yearly", "每年";
        /// 不定期.
        Irregular = "irregular", "不定期";
    }
);

labelled_enum!(
    /// 信息资源格式 category.
    FormatCategory ("format category") {
        /// 电子文件.
        Document = "document", "电子文件";
        /// 电子表格.
        Spreadsheet = "spreadsheet", "电子表格";
        /// 数据库.
        Database = "database", "数据库";
        /// 图形图像.
        Image = "image", "图形图像";
        /// 流媒体.
        Media = "media", "流媒体";
        /// 自描述格式.
        SelfDescribing = "self_describing", "自描述格式";
        /// 服务接口.
        Api = "api", "服务接口";
    }
);

labelled_enum!(
    /// 数据类型 of a 信息项 (single-letter codes of the national guide).
    DataType ("type") {
        /// 字符.
        C = "C", "字符";
        /// 数值.
        N = "N", "数值";
        /// 货币.
        Y = "Y", "货币";
        /// 日期.
        D = "D", "日期";
        /// 日期时间.
        T = "T", "日期时间";
        /// 逻辑.
        L = "L", "逻辑";
        /// 备注.
        M = "M", "备注";
        /// 通用.
        G = "G", "通用";
        /// 双精度.
        B = "B", "双精度";
        /// 整型.
        I = "I", "整型";
        /// 浮点.
        F = "F", "浮点";
    }
);

impl ShareType {
    /// 0 widest … 2 narrowest.
    pub(crate) fn rank(self) -> u8 {
        match self {
            ShareType::Unconditional => 0,
            ShareType::Conditional => 1,
            ShareType::None => 2,
        }
    }
}

impl OpenType {
    /// 0 widest … 2 narrowest.
    pub(crate) fn rank(self) -> u8 {
        match self {
            OpenType::Open => 0,
            OpenType::Conditional => 1,
            OpenType::Closed => 2,
        }
    }
}
