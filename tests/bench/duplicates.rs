//! Bulk duplicate search benchmark: N contacts (default 100,000) with phones, emails and
//! messenger identities, about 2% of them planted duplicates of another contact (the same
//! phone written another way, the same email in other case, the name in Cyrillic, a typo in
//! the name, the same Telegram account on a second bot); then the bulk scan with all four
//! default rules enabled ("Similar name" included) — the real code path of
//! `POST /api/v1/duplicate-scans`, on a SQLite file and on PostgreSQL.
//!
//! Prints the scan's duration and phases, the pairs compared, the groups found and how many
//! planted pairs they hold (recall), against the 10 s goal; and, as the reference measured in
//! the same run, the one-contact search (the chat page's button) over a sample, extrapolated to
//! every contact — what a scan without blocking in memory would cost.
//!
//!   cargo bench -p ferrydesk-tests --bench duplicates
//!
//! Environment: BENCH_N (contacts, default 100000), BENCH_BACKENDS (`sqlite,postgres`),
//! BENCH_SAMPLE (contacts searched one by one for the reference, default 300),
//! FERRYDESK_TEST_PG_URL (an admin connection; a temporary database is created and dropped).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ferrydesk_desk::auth::{Principal, Via};
use ferrydesk_desk::{Desk, DeskOptions, blobs::LocalBlobStore};
use ferrydesk_domain::*;
use ferrydesk_store::contacts::NewContact;
use ferrydesk_store::{Store, StoreOptions};
use sqlx::AssertSqlSafe;

const GOAL_SECS: f64 = 10.0;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// xorshift64*: deterministic data, so every run compares the same contacts.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const FIRST: &[&str] = &[
    "Ivan",
    "Petr",
    "Sergey",
    "Alexey",
    "Dmitry",
    "Andrey",
    "Mikhail",
    "Nikolay",
    "Pavel",
    "Yuri",
    "Oleg",
    "Igor",
    "Roman",
    "Maxim",
    "Artem",
    "Boris",
    "Viktor",
    "Gleb",
    "Denis",
    "Egor",
    "Kirill",
    "Leonid",
    "Stepan",
    "Timur",
    "Fedor",
    "Anna",
    "Maria",
    "Elena",
    "Olga",
    "Tatiana",
    "Natalia",
    "Irina",
    "Svetlana",
    "Yulia",
    "Ekaterina",
    "Daria",
    "Polina",
    "Vera",
    "Nadezhda",
    "Ksenia",
    "Alina",
    "Sofia",
    "Larisa",
    "Galina",
    "Zoya",
    "Lidia",
    "Marina",
    "Valeria",
    "Veronika",
    "Kristina",
];
const SYL1: &[&str] = &[
    "Ko", "Pe", "Sa", "Mo", "Vo", "Le", "Ba", "Gri", "Zu", "Ni", "Ro", "Fe", "Ku", "Me", "Do",
    "Tu", "Po", "Ra", "Shi", "Che", "Ze", "Lu", "Mi", "Ga", "Bo", "Ve", "Ta", "Ru", "Kra", "Smi",
    "Bela", "Cher", "Zhu", "Kaza", "Orlo", "Sko",
];
const SYL2: &[&str] = &[
    "val", "tro", "bor", "rin", "lin", "dov", "mar", "ser", "kun", "gol", "ten", "rask", "lev",
    "nik", "dan", "por", "sol", "vet", "mak", "zar", "tash", "bur", "kol", "shen", "rod", "lag",
];
const SYL3: &[&str] = &[
    "ov", "ev", "in", "enko", "sky", "ovich", "ik", "yan", "ets", "uk", "ovsky", "anov", "eev",
];

/// Latin to Cyrillic, letter by letter (the reverse of what duplicate keys do).
fn cyrillic(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let lower = c.to_ascii_lowercase();
        let two = chars.peek().map(|n| n.to_ascii_lowercase());
        let (cy, skip) = match (lower, two) {
            ('s', Some('h')) => ("ш", true),
            ('c', Some('h')) => ("ч", true),
            ('z', Some('h')) => ("ж", true),
            ('y', Some('a')) => ("я", true),
            ('y', Some('u')) => ("ю", true),
            ('k', Some('h')) => ("х", true),
            ('a', _) => ("а", false),
            ('b', _) => ("б", false),
            ('v', _) => ("в", false),
            ('g', _) => ("г", false),
            ('d', _) => ("д", false),
            ('e', _) => ("е", false),
            ('z', _) => ("з", false),
            ('i', _) => ("и", false),
            ('y', _) => ("й", false),
            ('k', _) => ("к", false),
            ('l', _) => ("л", false),
            ('m', _) => ("м", false),
            ('n', _) => ("н", false),
            ('o', _) => ("о", false),
            ('p', _) => ("п", false),
            ('r', _) => ("р", false),
            ('s', _) => ("с", false),
            ('t', _) => ("т", false),
            ('u', _) => ("у", false),
            ('f', _) => ("ф", false),
            ('c', _) => ("ц", false),
            (' ', _) => (" ", false),
            _ => ("", false),
        };
        if skip {
            chars.next();
        }
        if c.is_uppercase() {
            out.extend(cy.chars().flat_map(char::to_uppercase));
        } else {
            out.push_str(cy);
        }
    }
    out
}

struct Person {
    id: String,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    /// Telegram account id (every contact writes from one channel).
    account: String,
    channel: usize,
}

/// The contacts, and the planted duplicate pairs `(original, twin)` with their kind.
fn people(n: usize) -> (Vec<Person>, Vec<(usize, usize, &'static str)>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let planted_n = n / 50;
    let base = n - planted_n;
    let mut out = Vec::with_capacity(n);
    for i in 0..base {
        let surname = format!("{}{}{}", rng.pick(SYL1), rng.pick(SYL2), rng.pick(SYL3));
        let first = rng.pick(FIRST);
        let latin = format!("{first} {surname}");
        let name = if rng.below(10) < 3 {
            cyrillic(&latin)
        } else {
            latin
        };
        let phone = (rng.below(10) < 7).then(|| {
            format!(
                "+7 9{:02} {:03}-{:02}-{:02}",
                i % 100,
                (i / 100) % 1000,
                (i / 100_000) % 100,
                rng.below(100)
            )
        });
        let email = (rng.below(2) == 0).then(|| {
            format!(
                "{}.{}{i}@example.org",
                first.to_lowercase(),
                surname.to_lowercase()
            )
        });
        out.push(Person {
            id: format!("c{i:07}"),
            name,
            email,
            phone,
            account: format!("{}", 100_000_000 + i),
            channel: 0,
        });
    }
    let mut planted = Vec::with_capacity(planted_n);
    for k in 0..planted_n {
        let o = rng.below(base);
        let orig = &out[o];
        let id = format!("d{k:07}");
        let account = format!("{}", 900_000_000 + k);
        let (p, kind) = match k % 5 {
            // The same phone written the Russian way, a nickname instead of the name.
            0 if orig.phone.is_some() => {
                let digits: String = orig
                    .phone
                    .as_deref()
                    .unwrap_or_default()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect();
                (
                    Person {
                        id,
                        name: format!("Client {k}"),
                        email: None,
                        phone: Some(format!("8 ({}) {}", &digits[1..4], &digits[4..])),
                        account,
                        channel: 0,
                    },
                    "phone",
                )
            }
            1 if orig.email.is_some() => (
                Person {
                    id,
                    name: format!("Visitor {k}"),
                    email: orig.email.as_deref().map(str::to_uppercase),
                    phone: None,
                    account,
                    channel: 0,
                },
                "email",
            ),
            // The same Telegram account writing to a second bot.
            2 => (
                Person {
                    id,
                    name: format!("tg user {k}"),
                    email: None,
                    phone: None,
                    account: orig.account.clone(),
                    channel: 1,
                },
                "account",
            ),
            // A typo at the end of the surname.
            3 => {
                let mut name = orig.name.clone();
                let last = name.pop().unwrap_or('x');
                name.push(if last == 'a' || last == 'а' {
                    'o'
                } else {
                    'a'
                });
                (
                    Person {
                        id,
                        name,
                        email: None,
                        phone: None,
                        account,
                        channel: 0,
                    },
                    "name typo",
                )
            }
            // The name in the other alphabet, surname first.
            _ => {
                let mut parts: Vec<&str> = orig.name.split(' ').collect();
                parts.reverse();
                let flipped = parts.join(" ");
                let name = if flipped.is_ascii() {
                    cyrillic(&flipped)
                } else {
                    flipped
                };
                (
                    Person {
                        id,
                        name,
                        email: None,
                        phone: None,
                        account,
                        channel: 0,
                    },
                    "name alphabet",
                )
            }
        };
        planted.push((o, out.len(), kind));
        out.push(p);
    }
    (out, planted)
}

async fn fill(store: &Store, people: &[Person]) -> Result<()> {
    let now = Ts::now();
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO queues (id, name, routing_rule, accept_timeout_secs, created_at) \
         VALUES ('q-bench', 'Bench', 'round_robin', 60, $1)",
    )
    .bind(now.0)
    .execute(&mut *tx)
    .await?;
    for (id, name) in [("ch-tg-1", "Telegram bot 1"), ("ch-tg-2", "Telegram bot 2")] {
        sqlx::query(
            "INSERT INTO channels (id, kind, name, queue_id, created_at) \
             VALUES ($1, 'telegram', $2, 'q-bench', $3)",
        )
        .bind(id)
        .bind(name)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    for chunk in people.chunks(5_000) {
        let ids: Vec<ContactId> = chunk.iter().map(|p| ContactId(p.id.clone())).collect();
        let rows: Vec<NewContact<'_>> = chunk
            .iter()
            .zip(&ids)
            .map(|(p, id)| NewContact {
                id,
                name: &p.name,
                photo_url: None,
                email: p.email.as_deref(),
                phone: p.phone.as_deref(),
                now,
            })
            .collect();
        let mut tx = store.begin().await?;
        ferrydesk_store::contacts::insert_contacts(&mut tx, &rows).await?;
        for part in chunk.chunks(20) {
            let values: Vec<String> = (0..part.len())
                .map(|i| {
                    let b = i * 5;
                    format!(
                        "(${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5
                    )
                })
                .collect();
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO contact_identities (id, contact_id, channel_id, external_id, \
                 created_at) VALUES {}",
                values.join(",")
            )));
            for p in part {
                q = q
                    .bind(format!("i-{}", p.id))
                    .bind(p.id.clone())
                    .bind(if p.channel == 0 { "ch-tg-1" } else { "ch-tg-2" })
                    .bind(p.account.clone())
                    .bind(now.0);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

struct Figures {
    backend: &'static str,
    scan_secs: f64,
    groups: i64,
    recall: f64,
    reference_secs: f64,
}

async fn run(backend: &'static str, url: &str, n: usize, sample: usize) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let store = Store::connect(&StoreOptions {
        url: url.to_owned(),
        max_connections: 4,
        fast_lane: true,
        min_free_disk_mb: 0,
    })
    .await?;
    store.migrate().await?;
    let (people, planted) = people(n);
    let t = Instant::now();
    fill(&store, &people).await?;
    println!(
        "  [{backend}] {} contacts ({} planted duplicates) written in {:.1} s",
        people.len(),
        planted.len(),
        t.elapsed().as_secs_f64()
    );
    let blobs = Arc::new(LocalBlobStore::new(dir.path().join("blobs"))?);
    let desk = Desk::start(store.clone(), blobs, DeskOptions::default()).await?;
    let admin = desk
        .create_user(
            None,
            ferrydesk_desk::admin::NewUserInput {
                username: "bench-admin".into(),
                display_name: "Bench".into(),
                password: "bench-password-1".into(),
                role: Role::Admin,
                email: None,
                locale: None,
                chat_limit: None,
            },
        )
        .await?;
    let p = Principal {
        user: admin,
        via: Via::Token,
    };
    // Every default rule on, "Similar name" included.
    let mut rules = desk.duplicate_rules(&p).await?;
    for r in &mut rules {
        r.enabled = true;
    }
    desk.set_duplicate_rules(&p, rules).await?;

    let t = Instant::now();
    let scan = desk.begin_scan(Some(p.id())).await?;
    let scan = desk.run_duplicate_scan(&scan.id).await?;
    let scan_secs = t.elapsed().as_secs_f64();

    // Recall: planted pairs that ended up in one group.
    let mut conn = store.read().await?;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT contact_id, group_id FROM duplicate_group_members")
            .fetch_all(&mut *conn)
            .await?;
    let group_of: HashMap<String, String> = rows.into_iter().collect();
    let mut found_by_kind: HashMap<&str, (usize, usize)> = HashMap::new();
    for (o, d, kind) in &planted {
        let e = found_by_kind.entry(kind).or_default();
        e.1 += 1;
        if let (Some(a), Some(b)) = (group_of.get(&people[*o].id), group_of.get(&people[*d].id))
            && a == b
        {
            e.0 += 1;
        }
    }
    let found: usize = found_by_kind.values().map(|v| v.0).sum();
    let recall = found as f64 / planted.len().max(1) as f64;
    drop(conn);

    // Reference: the one-contact search, over a sample, extrapolated to every contact.
    let t = Instant::now();
    let step = (people.len() / sample.max(1)).max(1);
    let mut searched = 0;
    for person in people.iter().step_by(step).take(sample) {
        desk.find_duplicates(&p, &ContactId(person.id.clone()))
            .await
            .with_context(|| format!("searching {}", person.id))?;
        searched += 1;
    }
    let reference_secs = t.elapsed().as_secs_f64() / searched.max(1) as f64 * people.len() as f64;

    let st = &scan.stats;
    println!(
        "  [{backend}] scan {:.2} s (load {} ms, match {} ms, write {} ms): {} contacts, {} pairs compared, {} groups, {} blocks too large to compare",
        scan_secs,
        st["load_ms"],
        st["match_ms"],
        st["write_ms"],
        scan.contacts,
        scan.compared,
        scan.groups,
        st["oversized_blocks"],
    );
    let per_rule: Vec<String> = st["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("{} {}", r["rule"].as_str().unwrap_or("?"), r["pairs"]))
        .collect();
    println!(
        "  [{backend}] pairs found per rule: {}",
        per_rule.join(", ")
    );
    let mut kinds: Vec<_> = found_by_kind.into_iter().collect();
    kinds.sort();
    let kinds: Vec<String> = kinds
        .iter()
        .map(|(k, (f, t))| format!("{k} {f}/{t}"))
        .collect();
    println!(
        "  [{backend}] planted pairs found: {found}/{} ({:.1}%): {}",
        planted.len(),
        recall * 100.0,
        kinds.join(", ")
    );
    println!(
        "  [{backend}] reference: one-contact search {:.1} ms each over {searched} contacts → {:.0} s for all",
        reference_secs * 1000.0 / people.len() as f64,
        reference_secs
    );
    desk.shutdown();
    Ok(Figures {
        backend,
        scan_secs,
        groups: scan.groups,
        recall,
        reference_secs,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n = env_usize("BENCH_N", 100_000);
    let sample = env_usize("BENCH_SAMPLE", 300);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    println!("bulk duplicate search benchmark: {n} contacts, all four default rules enabled");
    let mut figures = Vec::new();
    for b in backends.split(',').map(str::trim) {
        match b {
            "sqlite" => {
                let dir = tempfile::tempdir()?;
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("bench.db").display()
                );
                figures.push(run("sqlite", &url, n, sample).await?);
            }
            "postgres" => {
                use sqlx::Connection;
                let admin = std::env::var("FERRYDESK_TEST_PG_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let name = format!("fd_bench_dup_{}", std::process::id());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .with_context(|| format!("PostgreSQL at {admin}"))?;
                sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
                    .execute(&mut conn)
                    .await?;
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await?;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                let result = run("postgres", &format!("{base}/{name}"), n, sample).await;
                sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                figures.push(result?);
            }
            other => anyhow::bail!("unknown backend {other}"),
        }
    }
    println!();
    println!(
        "| backend | scan | goal | groups | planted pairs found | one-by-one reference | speed-up |"
    );
    println!("|---|---|---|---|---|---|---|");
    for f in &figures {
        println!(
            "| {} | {:.2} s | {} (< {GOAL_SECS:.0} s) | {} | {:.1}% | {:.0} s | {:.0}× |",
            f.backend,
            f.scan_secs,
            if f.scan_secs < GOAL_SECS {
                "met"
            } else {
                "MISSED"
            },
            f.groups,
            f.recall * 100.0,
            f.reference_secs,
            f.reference_secs / f.scan_secs
        );
    }
    Ok(())
}
