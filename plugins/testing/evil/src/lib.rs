//! TEST ONLY. Each action misbehaves in one way the host must contain.

use ferrydesk_sdk::prelude::*;

struct Evil;

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let pad = [n; 64];
    if n == 0 {
        pad[3]
    } else {
        recurse(n - 1).wrapping_add(std::hint::black_box(pad)[5])
    }
}

impl Action for Evil {
    fn run(ctx: &Ctx, action: &str, input: Json) -> PluginResult<Outcome> {
        match action {
            "echo" => Ok(Outcome::new(input)),
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "memory" => {
                // Allocates `mb` MiB (forever by default), one MiB at a time, touching each.
                let mb = input.get("mb").and_then(Json::as_u64).unwrap_or(u64::MAX);
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                while (hoard.len() as u64) < mb {
                    hoard.push(vec![7u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
                Ok(Outcome::new(json!({ "allocated_mb": hoard.len() })))
            }
            "big-output" => {
                let kb = input.get("kb").and_then(Json::as_u64).unwrap_or(100 << 10) as usize;
                Ok(Outcome::new(json!("x".repeat(kb << 10))))
            }
            "notes" => {
                let n = input.get("n").and_then(Json::as_u64).unwrap_or(100_000);
                let size = input.get("size").and_then(Json::as_u64).unwrap_or(16) as usize;
                let text = "n".repeat(size);
                let mut out = Outcome::new(json!({}));
                for _ in 0..n {
                    out = out.post_note(text.clone());
                }
                Ok(out)
            }
            "kv-flood" => {
                // `keys` keys of `kb` KiB each, named from `prefix`.
                let keys = input.get("keys").and_then(Json::as_u64).unwrap_or(200);
                let kb = input.get("kb").and_then(Json::as_u64).unwrap_or(64) as usize;
                let prefix = input.get("prefix").and_then(Json::as_str).unwrap_or("k");
                let value = vec![b'v'; (kb << 10).min(64 << 10)];
                for i in 0..keys {
                    store::set(&format!("{prefix}{i}"), &value)?;
                }
                Ok(Outcome::new(json!({ "written": keys })))
            }
            "kv-delete-flood" => {
                // `keys` deletes of keys `pad` bytes long (plus the number), named from `prefix`.
                let keys = input.get("keys").and_then(Json::as_u64).unwrap_or(10_000);
                let pad = input.get("pad").and_then(Json::as_u64).unwrap_or(0) as usize;
                let prefix = input.get("prefix").and_then(Json::as_str).unwrap_or("k");
                let prefix = format!("{prefix}{}", "p".repeat(pad));
                for i in 0..keys {
                    store::delete(&format!("{prefix}{i}"));
                }
                Ok(Outcome::new(json!({ "deleted": keys })))
            }
            "stack" => Ok(Outcome::new(json!(recurse(u64::MAX >> 40)))),
            "panic" => panic!("the evil plugin panics"),
            "fetch" => {
                let url = input
                    .get("url")
                    .and_then(Json::as_str)
                    .unwrap_or("http://127.0.0.1:1/");
                // The call's trace id is a process job's idempotency key: pass it on, as a
                // well-behaved integration would.
                match Request::get(url)
                    .header("idempotency-key", ctx.trace_id.clone())
                    .send()
                {
                    Ok(r) => Ok(Outcome::new(
                        json!({ "status": r.status, "body": String::from_utf8_lossy(&r.body) }),
                    )),
                    Err(e) => Err(e),
                }
            }
            "kv-read" => {
                let key = input.get("key").and_then(Json::as_str).unwrap_or("secret");
                let v = store::get(key).map(|b| String::from_utf8_lossy(&b).into_owned());
                Ok(Outcome::new(json!({ "value": v })))
            }
            "kv-write" => {
                let key = input.get("key").and_then(Json::as_str).unwrap_or("secret");
                let value = input.get("value").and_then(Json::as_str).unwrap_or("");
                store::set(key, value.as_bytes())?;
                Ok(Outcome::new(json!({})))
            }
            "ambient" => {
                // No files, no environment, no sockets: all of these must come back empty.
                let file = std::fs::read_to_string("/etc/passwd").ok();
                let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let dir = std::fs::read_dir(".").ok().map(|d| d.count());
                let secret = ctx.config("token");
                Ok(Outcome::new(
                    json!({ "file": file, "env": env, "dir": dir, "config_token": secret }),
                ))
            }
            "secret" => {
                // Whether the secret setting reached the plugin (without showing it).
                let expect = input.get("expect").and_then(Json::as_str).unwrap_or("");
                Ok(Outcome::new(
                    json!({ "matches": ctx.secret("token").as_deref() == Some(expect) }),
                ))
            }
            "garbage" => Ok(Outcome::new(json!(
                "this is not the object the output schema wants"
            ))),
            "note" => Ok(Outcome::new(json!({})).post_note("note from evil")),
            "write-contact" => Ok(Outcome::new(json!({})).update_record(
                "contact",
                input.get("id").and_then(Json::as_str).unwrap_or(""),
                json!({"name": "pwned"}),
            )),
            other => Err(PluginError::new("unknown_action", other.to_owned())),
        }
    }
}

export_action!(Evil);
