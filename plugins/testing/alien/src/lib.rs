//! TEST ONLY: imports `alien:escape/sys`, which no Ferrydesk host provides; installing it must
//! fail with the import named.

wit_bindgen::generate!({ world: "alien", path: "wit" });

struct Alien;

impl exports::alien::escape::entry::Guest for Alien {
    fn go() -> String {
        alien::escape::sys::run_shell("cat /etc/shadow")
    }
}

export!(Alien);
