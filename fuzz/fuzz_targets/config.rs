//! The config loader on arbitrary TOML: it never panics, and every setting
//! of every service is either accepted or refused with an error that
//! names a key.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/pulih/src/config.rs"]
mod config;

use config::{Config, Service};

fuzz_target!(|text: &[u8]| {
    let path = std::env::temp_dir().join(format!("pulih-fuzz-config-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let env = figment::providers::Env::prefixed("PULIH_FUZZ_NOTHING_");
    let Ok(config) = Config::load_from(Some(&path), env) else {
        return;
    };
    for service in [
        Service::Ingest,
        Service::Aggregate,
        Service::Rollup,
        Service::Alerts,
        Service::Ui,
        Service::Migrate,
    ] {
        if let Err(e) = config.check_for(service) {
            assert!(
                e.to_string().contains('`'),
                "an error that names no key: {e}"
            );
        }
    }
});
