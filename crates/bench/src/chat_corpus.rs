//! A synthetic chat history of many messages, written into a fresh data dir before the
//! server starts.
//!
//! Users are created the way `unhidra admin create-user` creates them (so the server can log
//! them in); channels, memberships and messages go through the [`Store`] trait, the same
//! calls the server makes: messages through `append_message`, which assigns seqs and writes
//! the full-text index in its group-committed transactions. Many tasks append at once so that
//! commits fill their batches.
//!
//! The text: words drawn from a vocabulary with a Zipf distribution (frequent short English
//! words first, then made-up words), one to ~40 words per message, so the most common word
//! appears in most messages, as "the" does. Rare marker words (`qxrare10` in exactly 10
//! messages, and so on) are placed by message number, so searches for them have known hit
//! counts. Some messages are replies in the thread of a recent message in their channel.
//! Channel sizes are skewed: one channel holds `--big-share` of the messages, the rest
//! shrink as 1/k. Every message's content depends only on `--seed` and its number; which seq
//! it gets depends on the order the concurrent appends commit in.
//!
//! While generating, the hits of each [`SearchCase`] are counted, so the measured searches
//! can be checked against them.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use unhidra_server::{admin, paths, Config};
use unhidra_store::{Actor, NewChannel, NewMessage, Store};
use unhidra_store_sqlite::SqliteStore;

use crate::api::PASSWORD;
use crate::server_process::Usage;
use crate::stats::per_second;

/// Words of a message at most (the length is skewed towards short messages).
const MAX_WORDS: f64 = 40.0;
/// Recent thread roots remembered per channel, for replies to pick from.
const ROOTS_PER_CHANNEL: usize = 32;
/// Thread roots (of the biggest channel) kept for the thread-page measurement.
const THREAD_SAMPLE: usize = 200;
/// Hit counts of the marker words (those not above the message count are used).
const MARKER_HITS: [u64; 5] = [1, 10, 100, 1_000, 10_000];
/// A word no message contains.
pub const NO_HIT_WORD: &str = "qxnohit";

/// The most frequent words of English chat, most frequent first; the vocabulary continues
/// with made-up words.
const COMMON_WORDS: &[&str] = &[
    "the", "i", "to", "a", "and", "you", "it", "is", "that", "of", "in", "we", "for", "on", "this",
    "be", "with", "have", "but", "not", "are", "so", "just", "can", "do", "if", "at", "was", "me",
    "my", "what", "will", "or", "all", "there", "about", "from", "as", "get", "they", "one",
    "like", "now", "up", "out", "think", "should", "know", "an", "no", "yes", "ok", "thanks",
    "need", "would", "time", "going", "see", "good", "how", "some", "when", "also", "here", "more",
    "then", "been", "our", "could", "make", "today", "work", "still", "new", "build", "test",
    "yeah", "sure", "did", "back", "which", "them", "after", "want", "because", "any", "fix",
    "issue", "use", "look", "other", "only", "your", "by", "meeting", "release", "tomorrow",
    "please", "right", "got", "has", "its", "very", "well", "were", "let", "way", "deploy",
    "server", "branch", "review", "again", "change", "same", "before", "first", "where", "why",
    "who", "said", "into", "than", "over", "down", "even", "last", "long",
];

const CONSONANTS: &[char] = &[
    'b', 'd', 'f', 'g', 'k', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'z',
];
const VOWELS: &[char] = &['a', 'e', 'i', 'o', 'u'];

#[derive(Debug, Clone, clap::Args)]
pub struct CorpusArgs {
    /// Messages to generate.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=20_000_000))]
    pub messages: u64,
    /// Channels; the first holds --big-share of the messages, the others shrink as 1/k.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub channels: u32,
    /// Share of the messages in the biggest channel.
    #[arg(long, default_value_t = 0.5)]
    pub big_share: f64,
    /// Users who post (one more user, the reader, is a member of every channel and searches).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(3..=1000))]
    pub users: u32,
    /// Distinct words.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(300..=200_000))]
    pub vocabulary: u32,
    /// Exponent of the Zipf distribution of words (1.0: the k-th word is 1/k as frequent
    /// as the first).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Share of the messages that are thread replies.
    #[arg(long, default_value_t = 0.1)]
    pub reply_share: f64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Appends in flight at once (the store commits up to 64 queued appends together).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub seed_tasks: u32,
}

/// Words with Zipf-distributed frequencies.
#[derive(Debug)]
pub struct Vocabulary {
    words: Vec<String>,
    /// Cumulative weights, ending at 1.
    cumulative: Vec<f64>,
}

impl Vocabulary {
    /// `size` words: the common English ones, then made-up words of two or three syllables.
    pub fn new(size: usize, exponent: f64, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut seen: HashSet<String> = HashSet::new();
        let mut words: Vec<String> = Vec::with_capacity(size);
        for w in COMMON_WORDS.iter().take(size) {
            if seen.insert((*w).to_owned()) {
                words.push((*w).to_owned());
            }
        }
        // Bounded: far more attempts than made-up words are needed.
        for _ in 0..size.saturating_mul(50) {
            if words.len() >= size {
                break;
            }
            let syllables = if rng.gen_bool(0.6) { 2 } else { 3 };
            let mut word = String::new();
            for _ in 0..syllables {
                word.push(pick(&mut rng, CONSONANTS));
                word.push(pick(&mut rng, VOWELS));
            }
            if rng.gen_bool(0.3) {
                word.push(pick(&mut rng, CONSONANTS));
            }
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let weights: Vec<f64> = (1..=words.len())
            .map(|rank| 1.0 / (rank as f64).powf(exponent))
            .collect();
        Self {
            cumulative: cumulative(&weights),
            words,
        }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The word of this frequency rank (0: the most frequent).
    pub fn word(&self, rank: usize) -> Option<&str> {
        self.words.get(rank).map(String::as_str)
    }

    pub fn sample(&self, rng: &mut impl Rng) -> &str {
        let i = sample_index(&self.cumulative, rng);
        self.words.get(i).map_or("the", String::as_str)
    }
}

fn pick(rng: &mut impl Rng, from: &[char]) -> char {
    from.get(rng.gen_range(0..from.len().max(1)))
        .copied()
        .unwrap_or('a')
}

/// Running sums of `weights`, scaled to end at 1.
fn cumulative(weights: &[f64]) -> Vec<f64> {
    let total: f64 = weights.iter().sum();
    let mut sum = 0.0;
    weights
        .iter()
        .map(|w| {
            sum += w;
            if total > 0.0 {
                sum / total
            } else {
                1.0
            }
        })
        .collect()
}

/// An index drawn with the probabilities that `cumulative` sums up.
fn sample_index(cumulative: &[f64], rng: &mut impl Rng) -> usize {
    let u: f64 = rng.gen();
    cumulative
        .partition_point(|c| *c <= u)
        .min(cumulative.len().saturating_sub(1))
}

/// A search whose hits are counted while generating. `channel` and `author` are indexes
/// into [`Seeded::channels`] and [`Seeded::users`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchCase {
    pub name: String,
    /// All must appear.
    pub words: Vec<String>,
    pub channel: Option<usize>,
    pub author: Option<usize>,
    /// Messages that match, counted while generating.
    pub hits: u64,
}

impl SearchCase {
    fn new(name: &str, words: &[&str], channel: Option<usize>, author: Option<usize>) -> Self {
        Self {
            name: name.to_owned(),
            words: words.iter().map(|w| (*w).to_owned()).collect(),
            channel,
            author,
            hits: 0,
        }
    }

    fn matches(&self, message: &Planned) -> bool {
        self.channel.is_none_or(|c| c == message.channel)
            && self.author.is_none_or(|a| a == message.sender)
            && self
                .words
                .iter()
                .all(|w| message.words.iter().any(|m| m == w))
    }
}

/// A marker word placed in every message whose number is `offset` modulo `stride`.
#[derive(Debug, Clone)]
struct Marker {
    word: String,
    stride: u64,
    offset: u64,
}

fn marker_word(hits: u64) -> String {
    format!("qxrare{hits}")
}

/// What message number `i` is, before it is stored.
#[derive(Debug)]
struct Planned {
    channel: usize,
    /// Index into the users (0 is the reader, who never posts).
    sender: usize,
    body: String,
    /// The body's words, lower case (as the full-text index sees them).
    words: Vec<String>,
    reply: bool,
}

/// Who is where, and how text is drawn.
#[derive(Debug)]
struct Design {
    seed: u64,
    messages: u64,
    vocabulary: Vocabulary,
    channel_cdf: Vec<f64>,
    /// Per channel: the posting members (user indexes), most active first, and the
    /// cumulative weights (1/k) of their activity.
    posters: Vec<(Vec<usize>, Vec<f64>)>,
    markers: Vec<Marker>,
    reply_share: f64,
}

impl Design {
    fn new(args: &CorpusArgs) -> Self {
        let channels = args.channels as usize;
        let users = args.users as usize;
        let big = args.big_share.clamp(0.0, 1.0);
        let rest: f64 = (1..channels).map(|k| 1.0 / k as f64).sum();
        let weights: Vec<f64> = (0..channels)
            .map(|c| match c {
                0 if channels == 1 => 1.0,
                0 => big,
                k => (1.0 - big) * (1.0 / k as f64) / rest,
            })
            .collect();
        // The big channel has every poster; channel k about users/(k+1) of them.
        let posters = (0..channels)
            .map(|c| {
                let size = if c == 0 {
                    users
                } else {
                    (users / (c + 1) + 2).clamp(2, users)
                };
                let members: Vec<usize> = (0..size).map(|j| (c * 7 + j) % users + 1).collect();
                let activity: Vec<f64> = (1..=size).map(|k| 1.0 / k as f64).collect();
                (members, cumulative(&activity))
            })
            .collect();
        let markers = MARKER_HITS
            .iter()
            .filter(|hits| **hits <= args.messages)
            .map(|hits| {
                let stride = args.messages / hits;
                Marker {
                    word: marker_word(*hits),
                    stride,
                    offset: (stride / 2 + hits) % stride.max(1),
                }
            })
            .collect();
        Self {
            seed: args.seed,
            messages: args.messages,
            vocabulary: Vocabulary::new(args.vocabulary as usize, args.zipf, args.seed),
            channel_cdf: cumulative(&weights),
            posters,
            markers,
            reply_share: args.reply_share.clamp(0.0, 1.0),
        }
    }

    /// Message number `i`: a function of the seed and `i` only.
    fn plan(&self, i: u64) -> Planned {
        let mut rng = StdRng::seed_from_u64(
            self.seed ^ i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let channel = sample_index(&self.channel_cdf, &mut rng);
        let sender = self
            .posters
            .get(channel)
            .and_then(|(members, cdf)| members.get(sample_index(cdf, &mut rng)))
            .copied()
            .unwrap_or(1);
        let u: f64 = rng.gen();
        let count = 1 + (u * u * MAX_WORDS) as usize;
        let mut words: Vec<String> = (0..count)
            .map(|_| self.vocabulary.sample(&mut rng).to_owned())
            .collect();
        for marker in &self.markers {
            if i % marker.stride.max(1) == marker.offset {
                let at = rng.gen_range(0..=words.len());
                words.insert(at, marker.word.clone());
            }
        }
        let mut body = String::new();
        for (n, word) in words.iter().enumerate() {
            if n > 0 {
                body.push_str(if rng.gen_bool(0.05) { ", " } else { " " });
            }
            if n == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    body.extend(first.to_uppercase());
                    body.push_str(chars.as_str());
                }
            } else {
                body.push_str(word);
            }
        }
        match rng.gen_range(0..10) {
            0..=3 => {}
            4..=7 => body.push('.'),
            8 => body.push('?'),
            _ => body.push('!'),
        }
        Planned {
            channel,
            sender,
            body,
            words,
            reply: rng.gen_bool(self.reply_share),
        }
    }

    /// The searches whose hits are counted (see [`SearchCase`]).
    fn search_cases(&self, channels: usize) -> Vec<SearchCase> {
        let v = |rank: usize| self.vocabulary.word(rank).unwrap_or("the");
        let smallest = channels.saturating_sub(1);
        let top_poster = self
            .posters
            .first()
            .and_then(|(members, _)| members.first())
            .copied();
        let mut cases = vec![
            SearchCase::new("common word", &[v(0)], None, None),
            SearchCase::new("medium word (rank 200)", &[v(200)], None, None),
            SearchCase::new("uncommon word (rank 2000)", &[v(2000)], None, None),
        ];
        let markers: Vec<&str> = self.markers.iter().map(|m| m.word.as_str()).collect();
        for (hits, word) in MARKER_HITS.iter().zip(&markers) {
            if [10, 1000].contains(hits) {
                cases.push(SearchCase::new(
                    &format!("rare word ({hits} hits)"),
                    &[word],
                    None,
                    None,
                ));
            }
        }
        cases.extend([
            SearchCase::new("two words (ranks 3 and 30)", &[v(3), v(30)], None, None),
            SearchCase::new("common word, big channel", &[v(0)], Some(0), None),
            SearchCase::new(
                "common word, smallest channel",
                &[v(0)],
                Some(smallest),
                None,
            ),
            SearchCase::new(
                "medium word, smallest channel",
                &[v(200)],
                Some(smallest),
                None,
            ),
            SearchCase::new("common word, one author", &[v(0)], None, top_poster),
            SearchCase::new("word with no hits", &[NO_HIT_WORD], None, None),
        ]);
        cases
    }
}

/// The generated history: what was made and how fast, saved as `corpus.json` next to the
/// data dir so that a kept data dir can be measured again without generating it anew.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seeded {
    pub messages: u64,
    pub replies: u64,
    pub seed: u64,
    pub vocabulary: usize,
    pub mean_body_bytes: f64,
    /// Creating the users (one Argon2id hash each).
    pub users_secs: f64,
    /// Appending the messages.
    pub append_secs: f64,
    pub appends_per_sec: f64,
    /// CPU time of this process (which runs the store) while appending.
    #[serde(default)]
    pub append_cpu_secs: f64,
    pub seed_tasks: u32,
    /// Index 0 is the reader, a member of every channel.
    pub users: Vec<SeedUser>,
    /// Index 0 is the big channel; the last is the smallest.
    pub channels: Vec<SeedChannel>,
    pub cases: Vec<SearchCase>,
    /// Some thread roots of the big channel that have replies.
    pub thread_roots: Vec<String>,
    /// `unhidra.db`, its `-wal` and `-shm`, after the store was closed.
    pub db_bytes: u64,
    pub wal_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedUser {
    pub username: String,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedChannel {
    pub id: String,
    pub name: String,
    /// Members, the reader included.
    pub members: usize,
    pub messages: u64,
    /// The channel's last seq once generated.
    pub last_seq: i64,
}

/// The manifest's file name, next to the data dir.
pub const MANIFEST: &str = "corpus.json";

/// The one place the generator builds a [`NewMessage`], so that a field added to it is one
/// line here.
fn new_message(
    channel_id: &str,
    sender_id: &str,
    client_msg_id: String,
    body: String,
    created_at: OffsetDateTime,
    thread_root_id: Option<String>,
) -> NewMessage {
    NewMessage {
        id: uuid::Uuid::now_v7().to_string(),
        channel_id: channel_id.to_owned(),
        sender_id: sender_id.to_owned(),
        client_msg_id,
        body,
        created_at,
        thread_root_id,
        mentions: Vec::new(),
        attachments: Vec::new(),
        flag_reasons: Vec::new(),
    }
}

/// What the appending tasks share.
struct Shared {
    store: SqliteStore,
    design: Design,
    channel_ids: Vec<String>,
    user_ids: Vec<String>,
    next: AtomicU64,
    failed: AtomicBool,
    /// Per channel: stored non-reply messages, newest last.
    roots: Vec<Mutex<VecDeque<String>>>,
    thread_roots: Mutex<Vec<String>>,
    per_channel: Vec<AtomicU64>,
    case_hits: Vec<AtomicU64>,
    cases: Vec<SearchCase>,
    replies: AtomicU64,
    body_bytes: AtomicU64,
    started: Instant,
    /// The first message's time; message `i` is `i × step` later.
    start_time: OffsetDateTime,
    step: time::Duration,
}

/// Generates the history into `config.data_dir` (which must not hold a database yet) and
/// writes the manifest to `manifest_path`.
pub async fn generate(
    args: &CorpusArgs,
    config: &Config,
    manifest_path: &Path,
) -> anyhow::Result<Seeded> {
    let database = paths::database(&config.data_dir);
    if database.exists() {
        bail!("{} exists already", database.display());
    }
    let design = Design::new(args);

    // Users, as the administrator's command line creates them (one Argon2id hash each).
    let users_started = Instant::now();
    let mut users = Vec::new();
    for u in 0..=args.users {
        let username = if u == 0 {
            "bench-reader".to_owned()
        } else {
            format!("bench-user-{u:04}")
        };
        let id = admin::create_user(config, &username, SecretString::from(PASSWORD), false)
            .await
            .with_context(|| format!("creating user {username}"))?;
        users.push(SeedUser { username, id });
    }
    let users_secs = users_started.elapsed().as_secs_f64();

    let store = SqliteStore::open(&database)
        .await
        .context("opening the store")?;
    let span = time::Duration::days(365);
    let start_time = OffsetDateTime::now_utc() - span;
    let reader = users.first().context("no reader")?.id.clone();
    let mut channels = Vec::new();
    for c in 0..design.posters.len() {
        let name = if c == 0 {
            "bench-general".to_owned()
        } else {
            format!("bench-channel-{c:03}")
        };
        let channel = store
            .create_channel(NewChannel {
                id: uuid::Uuid::now_v7().to_string(),
                name: name.clone(),
                private: false,
                created_by: reader.clone(),
                created_at: start_time,
            })
            .await
            .context("creating a channel")?;
        let members = design
            .posters
            .get(c)
            .map(|(m, _)| m.clone())
            .unwrap_or_default();
        for u in &members {
            let user = users.get(*u).context("no such user")?;
            store
                .add_member(
                    &channel.id,
                    &user.id,
                    &Actor {
                        user_id: user.id.clone(),
                        at: start_time,
                    },
                )
                .await
                .context("adding a member")?;
        }
        channels.push(SeedChannel {
            id: channel.id,
            name,
            members: members.len() + 1,
            messages: 0,
            last_seq: 0,
        });
    }

    let cases = design.search_cases(channels.len());
    let shared = Arc::new(Shared {
        store: store.clone(),
        channel_ids: channels.iter().map(|c| c.id.clone()).collect(),
        user_ids: users.iter().map(|u| u.id.clone()).collect(),
        next: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        roots: channels
            .iter()
            .map(|_| Mutex::new(VecDeque::new()))
            .collect(),
        thread_roots: Mutex::new(Vec::new()),
        per_channel: channels.iter().map(|_| AtomicU64::new(0)).collect(),
        case_hits: cases.iter().map(|_| AtomicU64::new(0)).collect(),
        cases,
        replies: AtomicU64::new(0),
        body_bytes: AtomicU64::new(0),
        started: Instant::now(),
        start_time,
        step: span / (design.messages.max(1) as f64),
        design,
    });
    let cpu_before = Usage::own().unwrap_or_default();
    let mut tasks = Vec::new();
    for _ in 0..args.seed_tasks {
        tasks.push(tokio::spawn(append_some(Arc::clone(&shared))));
    }
    let mut first_error = None;
    for task in tasks {
        let result = task.await.context("an append task failed")?;
        if let Err(err) = result {
            first_error.get_or_insert(err);
        }
    }
    if let Some(err) = first_error {
        return Err(err);
    }
    let append_secs = shared.started.elapsed().as_secs_f64();
    let append_cpu_secs = Usage::own().unwrap_or_default().cpu_secs - cpu_before.cpu_secs;
    let messages = shared.design.messages;

    for (channel, count) in channels.iter_mut().zip(&shared.per_channel) {
        channel.messages = count.load(Ordering::Relaxed);
        channel.last_seq = store
            .channel_by_id(&channel.id)
            .await
            .context("reading a channel")?
            .map_or(0, |c| c.last_seq);
    }
    let mut cases = shared.cases.clone();
    for (case, hits) in cases.iter_mut().zip(&shared.case_hits) {
        case.hits = hits.load(Ordering::Relaxed);
    }
    let thread_roots = shared
        .thread_roots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let replies = shared.replies.load(Ordering::Relaxed);
    let body_bytes = shared.body_bytes.load(Ordering::Relaxed);
    let vocabulary = shared.design.vocabulary.len();
    drop(shared);
    store.close().await;

    let size = |suffix: &str| {
        let mut path = database.clone().into_os_string();
        path.push(suffix);
        std::fs::metadata(path).map_or(0, |m| m.len())
    };
    let seeded = Seeded {
        messages,
        replies,
        seed: args.seed,
        vocabulary,
        mean_body_bytes: body_bytes as f64 / messages.max(1) as f64,
        users_secs,
        append_secs,
        appends_per_sec: per_second(messages, std::time::Duration::from_secs_f64(append_secs)),
        append_cpu_secs,
        seed_tasks: args.seed_tasks,
        users,
        channels,
        cases,
        thread_roots,
        db_bytes: size(""),
        wal_bytes: size("-wal") + size("-shm"),
    };
    let text = serde_json::to_string_pretty(&seeded).context("writing the manifest")?;
    std::fs::write(manifest_path, text).context("writing the manifest")?;
    Ok(seeded)
}

/// Reads the manifest that [`generate`] wrote.
pub fn load_manifest(path: &Path) -> anyhow::Result<Seeded> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// One appending task: takes message numbers until all are taken or one task failed.
async fn append_some(shared: Arc<Shared>) -> anyhow::Result<()> {
    let total = shared.design.messages;
    loop {
        if shared.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return Ok(());
        }
        if let Err(err) = append_one(&shared, i).await {
            shared.failed.store(true, Ordering::Relaxed);
            return Err(err.context(format!("appending message {i}")));
        }
        // (`is_multiple_of` needs Rust 1.87; the workspace supports 1.85.)
        if i > 0 && i.checked_rem(100_000) == Some(0) {
            let rate = per_second(i, shared.started.elapsed());
            eprintln!("  generated {i} of {total} messages ({rate:.0}/s)");
        }
    }
}

async fn append_one(shared: &Shared, i: u64) -> anyhow::Result<()> {
    let planned = shared.design.plan(i);
    let channel_id = shared
        .channel_ids
        .get(planned.channel)
        .context("no such channel")?;
    let sender_id = shared
        .user_ids
        .get(planned.sender)
        .context("no such user")?;
    let roots = shared
        .roots
        .get(planned.channel)
        .context("no such channel")?;
    let root = if planned.reply {
        let recent = roots.lock().unwrap_or_else(|p| p.into_inner());
        // Replies go to a recent root; the choice need not be reproducible.
        let pick = (i as usize).wrapping_mul(31) % recent.len().max(1);
        recent.get(pick).cloned()
    } else {
        None
    };
    let body_len = planned.body.len() as u64;
    let created_at = shared.start_time + shared.step * (i as f64);
    let message = new_message(
        channel_id,
        sender_id,
        format!("seed-{i}"),
        planned.body.clone(),
        created_at,
        root.clone(),
    );
    let appended = shared
        .store
        .append_message(message)
        .await
        .context("append_message")?;
    if appended.duplicate {
        bail!("message {i} was stored before");
    }
    match root {
        Some(root) => {
            shared.replies.fetch_add(1, Ordering::Relaxed);
            if planned.channel == 0 {
                let mut sample = shared
                    .thread_roots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if sample.len() < THREAD_SAMPLE && !sample.contains(&root) {
                    sample.push(root);
                }
            }
        }
        None => {
            let mut recent = roots.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() >= ROOTS_PER_CHANNEL {
                recent.pop_front();
            }
            recent.push_back(appended.message.id);
        }
    }
    if let Some(count) = shared.per_channel.get(planned.channel) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    shared.body_bytes.fetch_add(body_len, Ordering::Relaxed);
    for (case, hits) in shared.cases.iter().zip(&shared.case_hits) {
        if case.matches(&planned) {
            hits.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(messages: u64) -> CorpusArgs {
        CorpusArgs {
            messages,
            channels: 20,
            big_share: 0.5,
            users: 50,
            vocabulary: 5000,
            zipf: 1.0,
            reply_share: 0.1,
            seed: 7,
            seed_tasks: 1,
        }
    }

    #[test]
    fn the_vocabulary_is_distinct_and_zipf_distributed() {
        let v = Vocabulary::new(5000, 1.0, 1);
        assert_eq!(v.len(), 5000);
        let distinct: HashSet<&str> = v.words.iter().map(String::as_str).collect();
        assert_eq!(distinct.len(), 5000);
        assert_eq!(v.word(0), Some("the"));
        assert!(v.words.iter().all(|w| !w.starts_with("qx")));
        let mut rng = StdRng::seed_from_u64(3);
        let n = 200_000;
        let the = (0..n).filter(|_| v.sample(&mut rng) == "the").count();
        // 1 / H(5000) ≈ 0.110.
        let share = the as f64 / n as f64;
        assert!((0.10..0.12).contains(&share), "{share}");
    }

    #[test]
    fn messages_depend_only_on_the_seed_and_their_number() {
        let d = Design::new(&args(1000));
        let (a, b) = (d.plan(17), d.plan(17));
        assert_eq!(a.body, b.body);
        assert_eq!((a.channel, a.sender), (b.channel, b.sender));
        assert_ne!(d.plan(18).body, a.body);
        assert!(a.sender >= 1, "the reader never posts");
    }

    #[test]
    fn markers_have_their_hit_counts_and_channels_are_skewed() {
        let n = 20_000;
        let d = Design::new(&args(n));
        let mut hits = [0u64; 5];
        let mut big = 0;
        for i in 0..n {
            let p = d.plan(i);
            for (k, h) in MARKER_HITS.iter().enumerate() {
                if p.words.contains(&marker_word(*h)) {
                    hits[k] += 1;
                }
            }
            big += u64::from(p.channel == 0);
        }
        assert_eq!(hits, [1, 10, 100, 1000, 10_000]);
        let share = big as f64 / n as f64;
        assert!((0.48..0.52).contains(&share), "{share}");
    }

    #[test]
    fn search_cases_match_on_words_channel_and_author() {
        let case = SearchCase::new("x", &["a", "b"], Some(2), None);
        let planned = |words: &[&str], channel| Planned {
            channel,
            sender: 1,
            body: String::new(),
            words: words.iter().map(|w| (*w).to_owned()).collect(),
            reply: false,
        };
        assert!(case.matches(&planned(&["b", "c", "a"], 2)));
        assert!(!case.matches(&planned(&["b", "c", "a"], 1)));
        assert!(!case.matches(&planned(&["b", "c"], 2)));
    }
}
