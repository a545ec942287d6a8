//! The same work as the Ferrydesk benchmark plugins: echo a JSON input, format a greeting.
use extism_pdk::*;

#[plugin_fn]
pub fn echo(input: String) -> FnResult<String> {
    Ok(input)
}
