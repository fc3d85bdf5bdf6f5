//! The Apache importer over any text: it refuses (with a file:line reason) or
//! translates, never panics, and what it translates passes validation again
//! and survives a JSON round trip in the `PUT /api/v1/config` shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_control_plane::import::import_str;
use switchyard_shared::ConfigDocument;
use switchyard_shared::validate::validate_config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(imported) = import_str(&text, "fuzz.conf") else {
        return;
    };
    for warning in &imported.warnings {
        assert!(warning.at.line >= 1, "a warning without its line: {warning}");
    }
    let mut again = imported.config.clone();
    validate_config(&mut again).expect("an imported config passes validation");
    let json = serde_json::to_string(&imported.config).expect("a config serializes");
    let back: ConfigDocument = serde_json::from_str(&json).expect("and reads back");
    assert_eq!(back.into_config(), imported.config);
});
