//! The catalogue entry (政务信息资源目录 core metadata, GB/T 21063): its 16 core fields, the
//! item-level (信息项) share and open types, and validation that reports every problem at once
//! with its field path.
//!
//! Two ways in: [`RawEntry`] is what a person writes (TOML or JSON, English keys or Chinese
//! labels for enumerations) and [`RawEntry::validate`] turns it into an [`Entry`]; an [`Entry`]
//! decoded from the wire is checked with [`Entry::check`]. Both apply the same rules.

mod decode;
mod enums;
mod raw;
mod rules;

use serde::{Deserialize, Serialize};

pub use enums::{DataType, FormatCategory, Labelled, OpenType, ShareMode, ShareType, UpdateCycle};
pub use raw::{RawEntry, RawFormat, RawItem};
pub use rules::MAX_ITEMS;

use crate::{Classification, ResourceCode, Uscc};

/// A validated catalogue entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 信息资源分类.
    pub classification: Classification,
    /// 信息资源名称 (≤ 128 characters).
    pub title: String,
    /// 信息资源代码, unique per provider.
    pub code: ResourceCode,
    /// 信息资源提供方.
    pub provider_name: String,
    /// 信息资源提供方代码 (USCC).
    pub provider_code: Uscc,
    /// 信息资源摘要.
    #[serde(rename = "abstract")]
    pub summary: String,
    /// 信息资源格式.
    pub format: Format,
    /// 信息项信息.
    pub items: Vec<Item>,
    /// 共享类型.
    pub share_type: ShareType,
    /// 共享条件 (conditions, or the legal basis for 不予共享).
    pub share_condition: Option<String>,
    /// 共享方式.
    pub share_mode: ShareMode,
    /// 开放属性.
    pub open_type: OpenType,
    /// 开放条件.
    pub open_condition: Option<String>,
    /// 更新周期.
    pub update_cycle: UpdateCycle,
    /// 发布日期, `YYYY-MM-DD`.
    pub publish_date: String,
    /// 关联资源代码.
    pub related_codes: Vec<ResourceCode>,
}

/// 信息资源格式: category and concrete type (csv, xlsx, mysql, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    /// The category.
    pub category: FormatCategory,
    /// The concrete type.
    #[serde(rename = "type")]
    pub kind: String,
}

/// 信息项: one field of a structured resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// 信息项名称.
    pub name: String,
    /// 数据类型.
    pub data_type: DataType,
    /// 数据长度.
    pub length: Option<u32>,
    /// Item-level 共享类型; `None` inherits the entry's.
    pub share_type: Option<ShareType>,
    /// Item-level 开放属性; `None` inherits the entry's.
    pub open_type: Option<OpenType>,
}

/// One validation problem, located by its field path (`items[3].data_type`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Path of the field, e.g. `items[3].data_type`.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All problems found in one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// The paths of all problems, in order (handy in tests and for UIs).
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }

    /// How many problems, in words: `1 problem`, `3 problems`.
    pub fn summary(&self) -> String {
        match self.0.len() {
            1 => "1 problem".to_owned(),
            n => format!("{n} problems"),
        }
    }
}

impl Entry {
    /// Checks the cross-field rules (lengths, conditions, 不予共享 ⇒ 不予开放, item levels, …).
    pub fn check(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        rules::check(&rules::View::from(self), &mut errors);
        if errors.0.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The items a consumer may see under the entry's and the items' share types.
    pub fn effective_share_type(&self, item: &Item) -> ShareType {
        item.share_type.unwrap_or(self.share_type)
    }
}
