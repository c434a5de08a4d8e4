//! Regions (GB/T 2260 administrative division codes, `admdvs`) and the 31 mainland provinces.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The 31 mainland provincial-level divisions: two-digit prefix, English name, Chinese name.
pub const PROVINCES: [(u8, &str, &str); 31] = [
    (11, "Beijing", "北京市"),
    (12, "Tianjin", "天津市"),
    (13, "Hebei", "河北省"),
    (14, "Shanxi", "山西省"),
    (15, "Inner Mongolia", "内蒙古自治区"),
    (21, "Liaoning", "辽宁省"),
    (22, "Jilin", "吉林省"),
    (23, "Heilongjiang", "黑龙江省"),
    (31, "Shanghai", "上海市"),
    (32, "Jiangsu", "江苏省"),
    (33, "Zhejiang", "浙江省"),
    (34, "Anhui", "安徽省"),
    (35, "Fujian", "福建省"),
    (36, "Jiangxi", "江西省"),
    (37, "Shandong", "山东省"),
    (41, "Henan", "河南省"),
    (42, "Hubei", "湖北省"),
    (43, "Hunan", "湖南省"),
    (44, "Guangdong", "广东省"),
    (45, "Guangxi", "广西壮族自治区"),
    (46, "Hainan", "海南省"),
    (50, "Chongqing", "重庆市"),
    (51, "Sichuan", "四川省"),
    (52, "Guizhou", "贵州省"),
    (53, "Yunnan", "云南省"),
    (54, "Tibet", "西藏自治区"),
    (61, "Shaanxi", "陕西省"),
    (62, "Gansu", "甘肃省"),
    (63, "Qinghai", "青海省"),
    (64, "Ningxia", "宁夏回族自治区"),
    (65, "Xinjiang", "新疆维吾尔自治区"),
];

/// Why a region code was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("region code {0:?} must be 6 digits (GB/T 2260), e.g. 500000")]
    Malformed(String),
    #[error("region code {0} is not in a mainland province (unknown prefix {1:02})")]
    UnknownProvince(String, u8),
    #[error("{0} is not a province code; a province code ends in 0000, e.g. 500000")]
    NotAProvince(String),
}

/// A mainland province, identified by the first two digits of its division code.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Province(u8);

/// A 6-digit administrative division code inside a known province (a city or county may be named).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Region(u32);

impl Province {
    /// All 31 provinces in code order.
    pub fn all() -> impl Iterator<Item = Province> {
        PROVINCES.iter().map(|(prefix, _, _)| Province(*prefix))
    }

    pub fn from_prefix(prefix: u8) -> Option<Province> {
        PROVINCES
            .iter()
            .any(|(p, _, _)| *p == prefix)
            .then_some(Province(prefix))
    }

    /// Parses a province code such as `500000`; city codes are refused (use [`Region`]).
    pub fn from_code(code: u32) -> Result<Province, RegionError> {
        let region = Region::from_code(code)?;
        if code % 10_000 != 0 {
            return Err(RegionError::NotAProvince(format!("{code:06}")));
        }
        Ok(region.province())
    }

    pub fn prefix(self) -> u8 {
        self.0
    }

    /// The 6-digit code, e.g. 500000.
    pub fn code(self) -> u32 {
        u32::from(self.0).wrapping_mul(10_000)
    }

    fn entry(self) -> (&'static str, &'static str) {
        PROVINCES
            .iter()
            .find(|(p, _, _)| *p == self.0)
            .map(|(_, en, zh)| (*en, *zh))
            .unwrap_or(("?", "?"))
    }

    pub fn name(self) -> &'static str {
        self.entry().0
    }

    pub fn name_zh(self) -> &'static str {
        self.entry().1
    }
}

impl Region {
    pub fn from_code(code: u32) -> Result<Region, RegionError> {
        if !(100_000..=999_999).contains(&code) {
            return Err(RegionError::Malformed(code.to_string()));
        }
        let prefix = (code / 10_000) as u8;
        if Province::from_prefix(prefix).is_none() {
            return Err(RegionError::UnknownProvince(format!("{code:06}"), prefix));
        }
        Ok(Region(code))
    }

    pub fn code(self) -> u32 {
        self.0
    }

    pub fn province(self) -> Province {
        Province((self.0 / 10_000) as u8)
    }
}

impl From<Province> for Region {
    fn from(province: Province) -> Region {
        Region(province.code())
    }
}

fn parse_six_digits(text: &str) -> Result<u32, RegionError> {
    if text.len() != 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RegionError::Malformed(text.to_string()));
    }
    text.parse().map_err(|_| RegionError::Malformed(text.to_string()))
}

impl FromStr for Region {
    type Err = RegionError;
    fn from_str(text: &str) -> Result<Region, RegionError> {
        Region::from_code(parse_six_digits(text)?)
    }
}

impl FromStr for Province {
    type Err = RegionError;
    fn from_str(text: &str) -> Result<Province, RegionError> {
        Province::from_code(parse_six_digits(text)?)
    }
}

impl TryFrom<u32> for Region {
    type Error = RegionError;
    fn try_from(code: u32) -> Result<Region, RegionError> {
        Region::from_code(code)
    }
}

impl TryFrom<u32> for Province {
    type Error = RegionError;
    fn try_from(code: u32) -> Result<Province, RegionError> {
        Province::from_code(code)
    }
}

impl From<Region> for u32 {
    fn from(region: Region) -> u32 {
        region.0
    }
}

impl From<Province> for u32 {
    fn from(province: Province) -> u32 {
        province.code()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region({:06})", self.0)
    }
}

impl fmt::Display for Province {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.code())
    }
}

impl fmt::Debug for Province {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Province({:06} {})", self.code(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_all_31_provinces_with_names() {
        assert_eq!(Province::all().count(), 31);
        let chongqing: Province = "500000".parse().unwrap();
        assert_eq!(chongqing.name(), "Chongqing");
        assert_eq!(chongqing.name_zh(), "重庆市");
        assert_eq!(chongqing.to_string(), "500000");
        let city: Region = "510100".parse().unwrap();
        assert_eq!(city.province().name(), "Sichuan");
    }

    #[test]
    fn refuses_bad_codes() {
        assert!(matches!("5000".parse::<Region>(), Err(RegionError::Malformed(_))));
        assert!(matches!("abcdef".parse::<Region>(), Err(RegionError::Malformed(_))));
        assert!(matches!(
            "710000".parse::<Region>(),
            Err(RegionError::UnknownProvince(_, 71))
        ));
        assert!(matches!(
            "510100".parse::<Province>(),
            Err(RegionError::NotAProvince(_))
        ));
        assert!(Region::from_code(99).is_err());
    }
}
