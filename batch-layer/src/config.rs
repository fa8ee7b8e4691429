//! The `[batch]` section of the configuration.

use std::collections::BTreeMap;

use lakehouse_lake::Decimal;
use serde::{Deserialize, Serialize};

use crate::jobs::JobParams;

/// Batch layer settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BatchConfig {
    /// Tape prints carrying any of these condition codes stay out of L2 and L3.
    #[serde(default)]
    pub excluded_conditions: Vec<String>,
    /// Large-trade notional thresholds (instrument currency) by asset class, `*` for the rest.
    #[serde(default)]
    pub large_trade_thresholds: BTreeMap<String, Decimal>,
    /// Gross exposure limits (reporting currency) by desk.
    #[serde(default)]
    pub desk_limits: BTreeMap<String, Decimal>,
    /// How many desk x asset class x currency rows count as the top concentration.
    #[serde(default = "default_top_n")]
    pub top_n: u32,
}

fn default_top_n() -> u32 {
    5
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            excluded_conditions: Vec::new(),
            large_trade_thresholds: BTreeMap::new(),
            desk_limits: BTreeMap::new(),
            top_n: default_top_n(),
        }
    }
}

impl BatchConfig {
    /// What the jobs take.
    pub fn params(&self) -> JobParams {
        JobParams {
            excluded_conditions: self.excluded_conditions.clone(),
            large_trade_thresholds: self.large_trade_thresholds.clone(),
            desk_limits: self.desk_limits.clone(),
            top_n: self.top_n,
        }
    }
}
