//! [`NativeRoot`]: the host of one configuration's root.

use std::cell::RefCell;
use std::time::Duration;

use tollgate_filter::host::{
    Callout, Host, HostError, LogLevel, MetricKind, RootHost, SetError, Versioned,
};

use super::{common_host_calls, failed, metric_id, move_metric, MetricDef, Ticker};
use crate::abi::{Answer, EnvoyConfig};

/// The root of one filter configuration, on Envoy's main thread.
pub struct NativeRoot {
    /// The configuration in Envoy.
    pub envoy: Box<dyn EnvoyConfig>,
    /// The plugin configuration JSON.
    pub plugin: Vec<u8>,
    /// The metrics defined so far (index = the filter's id).
    pub metrics: RefCell<Vec<MetricDef>>,
    /// The answer of the callout being handled, if one is.
    pub answer: RefCell<Option<Answer>>,
    /// The tick, once its period is set.
    pub ticker: RefCell<Option<Ticker>>,
}

impl NativeRoot {
    /// A root for the configuration `envoy` with its JSON.
    pub fn new(envoy: Box<dyn EnvoyConfig>, plugin: Vec<u8>) -> Self {
        NativeRoot {
            envoy,
            plugin,
            metrics: RefCell::new(Vec::new()),
            answer: RefCell::new(None),
            ticker: RefCell::new(None),
        }
    }
}

impl Host for NativeRoot {
    common_host_calls!();

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let gauge = kind == MetricKind::Gauge;
        let mut metrics = self.metrics.borrow_mut();
        if let Some(id) = metric_id(&metrics, name, gauge) {
            return Ok(id);
        }
        let envoy_id = self
            .envoy
            .define_metric(gauge, name)
            .ok_or_else(|| failed(&format!("define metric {name}")))?;
        metrics.push(MetricDef {
            name: name.to_string(),
            gauge,
            envoy_id,
        });
        u32::try_from(metrics.len() - 1).map_err(|_| failed("define a metric"))
    }

    fn increment_metric(&self, id: u32, by: i64) -> Result<(), HostError> {
        move_metric(&*self.envoy, &self.metrics.borrow(), id, by)
    }
}

impl RootHost for NativeRoot {
    fn plugin_config(&self, size: usize) -> Option<Vec<u8>> {
        (size > 0 && size == self.plugin.len()).then(|| self.plugin.clone())
    }

    fn set_tick_period_ms(&self, period_ms: u64) -> Result<(), HostError> {
        // The old thread (if any) stops before the new one starts.
        drop(self.ticker.borrow_mut().take());
        let scheduler = self
            .envoy
            .scheduler()
            .ok_or_else(|| failed("create a scheduler"))?;
        let ticker = Ticker::start(scheduler, Duration::from_millis(period_ms.max(1)))?;
        *self.ticker.borrow_mut() = Some(ticker);
        Ok(())
    }

    fn done(&self) {}
}
